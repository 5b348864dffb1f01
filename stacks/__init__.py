"""keystead.stacks: the Pulumi program and its components.

The program arrives with the stacks issue; Pulumi.yaml already points here.
"""
