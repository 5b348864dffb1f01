"""keystead: KMS keys as code, an envelope-encrypted vault, and the worker that keeps both rotated.

The library's public surface: the vault (:class:`Vault`), its configuration
(:func:`load_config`, :class:`Config`, :class:`KeyConfig`) and the families of
the one error tree (:mod:`keystead.errors` has every class). The rotation
worker is :mod:`keystead.rotation`, the IAM generator :mod:`keystead.policies`.

:class:`Vault` loads on first use (``keystead.Vault``): it brings the crypto
backend and the stores, which a command that never opens the vault (``keystead
--help``, ``keystead policy``) should not pay for at start-up.
"""

from __future__ import annotations

import importlib
import typing

from keystead.config import Config, KeyConfig, load_config
from keystead.errors import (
    AuditError,
    ConfigError,
    DecryptError,
    FormatError,
    InputError,
    Interrupted,
    KeysteadError,
    NotFoundError,
    PolicyError,
    ProviderError,
    RotationError,
    StoreError,
)

if typing.TYPE_CHECKING:
    from keystead.vault import Vault

__version__ = "0.1.0"

__all__ = [
    "AuditError",
    "Config",
    "ConfigError",
    "DecryptError",
    "FormatError",
    "InputError",
    "Interrupted",
    "KeyConfig",
    "KeysteadError",
    "NotFoundError",
    "PolicyError",
    "ProviderError",
    "RotationError",
    "StoreError",
    "Vault",
    "load_config",
]

_LAZY = {"Vault": "keystead.vault"}


def __getattr__(name: str) -> object:
    """Load a lazy export (PEP 562) on first use, then keep it as a module attribute."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
