"""keystead.rotation"""
