"""The IAM spec: keys and principals declared once, read and checked.

``load_spec(path)`` / ``parse_spec(mapping)`` return a frozen :class:`Spec`
or raise :class:`SpecError` naming the field (and the line, when known).
"""

from .errors import SeparationOfDuties, SpecError
from .load import load_spec, parse_spec
from .model import Aws, Grant, HsmStore, Key, Principal, Spec, WorkerTrust

__all__ = [
    "Aws",
    "Grant",
    "HsmStore",
    "Key",
    "Principal",
    "SeparationOfDuties",
    "Spec",
    "SpecError",
    "WorkerTrust",
    "load_spec",
    "parse_spec",
]
