"""keystead: KMS keys as code, an envelope-encrypted vault, and the worker that keeps both rotated."""

__version__ = "0.1.0"
