"""Least-privilege IAM generated from a spec: AWS identity, key and trust
policies, GCP IAM bindings and the rotator's custom role.

``documents(spec, arns)`` returns every document by relative path (pure);
``write`` puts them under a directory; ``render`` is their one JSON form.
"""

from .lockout import LockoutError, check_admin_access
from .output import documents, render, write

__all__ = ["LockoutError", "check_admin_access", "documents", "render", "write"]
