"""keystead: KMS keys as code, an envelope-encrypted vault, and the worker that keeps both rotated.

The library's public surface: the vault (:class:`Vault`), its configuration
(:func:`load_config`, :class:`Config`, :class:`KeyConfig`) and the families of
the one error tree (:mod:`keystead.errors` has every class). The rotation
worker is :mod:`keystead.rotation`, the IAM generator :mod:`keystead.policies`.

Each name loads on first use (``keystead.Vault``): ``import keystead`` itself
stays instant, so every ``keystead.*`` import (the command line's first) does
no work before keystead.cli guards Ctrl-C, and a command that never opens the
vault does not load the crypto backend and the stores.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without loading typing at start-up; mypy reads it as true
if TYPE_CHECKING:
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
    from keystead.vault import Vault
del TYPE_CHECKING

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

_LAZY = {
    **dict.fromkeys(("Config", "KeyConfig", "load_config"), "keystead.config"),
    **dict.fromkeys(("AuditError", "ConfigError", "DecryptError", "FormatError", "InputError", "Interrupted",
                     "KeysteadError", "NotFoundError", "PolicyError", "ProviderError", "RotationError",
                     "StoreError"), "keystead.errors"),
    "Vault": "keystead.vault",
}


def __getattr__(name: str) -> object:
    """Load a lazy export (PEP 562) on first use, then keep it as a module attribute."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
