"""The `keystead` command line (keystead/cli/entry.py).

This module only guards the imports: a Ctrl-C while Python is still loading
keystead prints one line and exits 130 instead of a traceback. It is kept
tiny so that the guard starts as early as possible.
"""

try:
    from keystead.cli.entry import INTERNAL_ERROR, INTERRUPTED, KeysteadGroup, cli, main
except KeyboardInterrupt:  # Ctrl-C while Python is still importing keystead
    import sys

    sys.stderr.write("keystead: interrupted\n")
    raise SystemExit(130) from None

__all__ = ["INTERNAL_ERROR", "INTERRUPTED", "KeysteadGroup", "cli", "main"]
