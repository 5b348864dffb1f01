"""keystead.policies"""
