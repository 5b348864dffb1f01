"""The lint's input error, under :class:`keystead.errors.PolicyError`.

A file handed to lint that cannot be read or parsed raises
:class:`LintInputError`; the command line turns it into exit code 2.
"""

from __future__ import annotations

from keystead.errors import PolicyError


class LintInputError(PolicyError):
    pass
