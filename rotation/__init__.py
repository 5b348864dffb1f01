"""keystead.rotation: the KMS key rotation worker (rotation/ in the repository).

The public surface, re-exported here; the modules behind it are the layout:

- :class:`Engine` drives each key's rotation through its persisted states
  (:mod:`.engine`); a sweep gives a :class:`SweepResult` of one
  :class:`KeyResult` per key, each with its :class:`Outcome`.
- :func:`plan` says, reading only, what a sweep would do (:mod:`.planner`).
- :func:`run_once`, :func:`run_scheduler`, :func:`abandon` and
  :func:`restore_version` open the vault and the state database and run the
  engine (:mod:`.worker`), what ``keystead rotate``, ``keystead worker`` and
  ``keystead keys restore`` call.
- :class:`StateDB` is the rotation state database (:mod:`.state`).
- :class:`StoreSet` is every vault store the config names (:mod:`.stores`).

Lanes (:mod:`.lanes`), the rewrap (:mod:`.rewrap`) and retirement
(:mod:`.retire`) are steps of the engine, not called directly.
"""

from __future__ import annotations

from keystead.rotation.engine import (
    LOG_DATE_FORMAT,
    LOG_FORMAT,
    Engine,
    KeyResult,
    NoProgress,
    Outcome,
    Progress,
    SweepResult,
)
from keystead.rotation.planner import KeyPlan, plan
from keystead.rotation.state import StateDB, StateDBError
from keystead.rotation.stores import StoreSet
from keystead.rotation.worker import abandon, restore_version, run_once, run_scheduler, stop_on_signals

__all__ = [
    "LOG_DATE_FORMAT",
    "LOG_FORMAT",
    "Engine",
    "KeyPlan",
    "KeyResult",
    "NoProgress",
    "Outcome",
    "Progress",
    "StateDB",
    "StateDBError",
    "StoreSet",
    "SweepResult",
    "abandon",
    "plan",
    "restore_version",
    "run_once",
    "run_scheduler",
    "stop_on_signals",
]
