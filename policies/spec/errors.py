"""The spec errors, under :class:`keystead.errors.PolicyError`::

    PolicyError
    └── SpecError            the IAM spec is invalid; names the field (and line)
        └── SeparationOfDuties   one principal is admin and crypto user of one key

The command line turns SpecError into its one-line message.
"""

from __future__ import annotations

from keystead.errors import PolicyError


class SpecError(PolicyError):
    """An invalid spec. ``field`` is the dotted path, ``line`` the line if known."""

    def __init__(self, field: str, message: str, *, line: int | None = None,
                 source: str | None = None) -> None:
        self.field = field
        self.line = line
        self.source = source
        where = field
        if line is not None:
            where = f"{source or 'spec'}:{line}: {field}"
        elif source:
            where = f"{source}: {field}"
        super().__init__(f"{where}: {message}")


class SeparationOfDuties(SpecError):
    pass
