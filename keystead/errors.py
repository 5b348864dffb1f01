"""keystead's one error tree.

Every error keystead raises on purpose derives from :class:`KeysteadError`.
The command line maps each family to a one-line message and an exit code
(``exit_code``), listed in docs/cli.md::

    KeysteadError                    1  anything else that went wrong
    ├── InputError                   2  a bad argument: secret name, date, flag value
    ├── ConfigError                  3  keystead.toml missing, unreadable or invalid
    │   └── StackConfigError         3  a keystead: setting of Pulumi.<stack>.yaml; names it (stacks/)
    ├── NotFoundError                4  no such secret, key or key version
    ├── FormatError                  5  an envelope that cannot be parsed
    │   └── UnsupportedVersion       5  an envelope format version this reader does not know
    ├── ProviderError                6  a KMS provider refused or failed (op, key, code)
    │   ├── ProviderUnavailable      6  transient: throttled after retries, network down,
    │   │                               custom key store disconnected; retried next sweep
    │   ├── DecryptError             6  deliberately says nothing about why
    │   ├── KeyFileError             6  local key file missing, unsafe mode, unreadable
    │   └── UnknownReference         6  a key reference of no known form
    ├── StoreError                   7  the vault store failed (I/O, locked, disk full)
    │   └── StoreUnavailable         7  transient: the database server unreachable, gone or
    │                                   timed out; nothing half-written, retried next sweep
    ├── RotationError                8  rotation state database or state machine
    │   ├── LeaseLost                8  this worker's lane (or key) lease expired and another
    │   │                               took it: that lane stops, nothing in hand is written
    │   ├── RotationBusy             8  another worker holds the key's lease (a transition)
    │   └── StateDBError             8  the state database itself failed: the whole sweep stops
    ├── AuditError                   9  the audit log's hash chain is broken
    ├── PolicyError                 10  an IAM spec or policy document is invalid
    │   ├── SpecError               10  the IAM spec is invalid; names the field (policies/spec/)
    │   │   └── SeparationOfDuties  10  one principal would administer and use one key
    │   ├── LintInputError          10  a file handed to lint cannot be read (exit 2 in lint)
    │   └── LockoutError            10  a key policy would lock the deployer out (policies/generate/)
    └── Interrupted                130  Ctrl-C stopped the work; the message says how far it got

Lower-level errors (OSError, sqlite3, SQLAlchemy, botocore) are translated into
the most specific family with ``raise ... from``; the original stays on
``__cause__`` for ``--debug``.
"""

from __future__ import annotations


class KeysteadError(Exception):
    """Base of every error keystead raises on purpose."""

    exit_code = 1


class InputError(KeysteadError):
    exit_code = 2


class ConfigError(KeysteadError):
    exit_code = 3


class NotFoundError(KeysteadError):
    exit_code = 4


class FormatError(KeysteadError):
    exit_code = 5


class UnsupportedVersion(FormatError):
    pass


class ProviderError(KeysteadError):
    """A KMS provider refused or failed.

    The structured fields say what was asked and what the provider answered,
    for retry decisions and metrics: ``op`` (wrap, unwrap, rewrap, describe,
    rotate, disable, retire, restore), ``key`` (the reference) and ``code``
    (the provider's own error code, e.g. ``ThrottlingException``).
    """

    exit_code = 6

    def __init__(self, message: str = "", *, op: str | None = None, key: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.op = op
        self.key = key
        self.code = code


class ProviderUnavailable(ProviderError):
    """Transient: the provider could not be reached or throttled us past our retries.

    Raised for a whole batch, never per item: nothing is known about the
    slots, so none is marked unreadable; the rotation pauses and the next
    sweep tries again.
    """


class DecryptError(ProviderError):
    """Opening failed. On purpose it does not say whether the key, the data
    key, the name binding or the ciphertext was wrong."""

    def __init__(self, message: str = "decryption failed") -> None:
        super().__init__(message)


class KeyFileError(ProviderError):
    pass


class UnknownReference(ProviderError):
    pass


class StoreError(KeysteadError):
    exit_code = 7


class StoreUnavailable(StoreError):
    """Transient: the store's database server could not be reached, went away
    mid-operation, or cancelled a statement (timeout, shutdown, deadlock).

    The transaction it interrupted was rolled back (or never began): nothing
    is half-written. Raised for a whole call; rotation pauses the key and the
    next sweep retries, resuming from its durable cursor.
    """


class RotationError(KeysteadError):
    exit_code = 8


class RotationBusy(RotationError):
    pass


class AuditError(KeysteadError):
    exit_code = 9


class PolicyError(KeysteadError):
    exit_code = 10


class Interrupted(KeysteadError):
    """Ctrl-C (SIGINT) stopped a command between two steps; the message says what was done."""

    exit_code = 130


EXIT_CODES: dict[str, int] = {
    cls.__name__: cls.exit_code
    for cls in (
        KeysteadError,
        InputError,
        ConfigError,
        NotFoundError,
        FormatError,
        ProviderError,
        StoreError,
        RotationError,
        AuditError,
        PolicyError,
        Interrupted,
    )
}
