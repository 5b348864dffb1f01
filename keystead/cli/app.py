"""What every command shares: the configuration and the vault, opened on first use;
tables, messages and Ctrl-C handling that behave under pipes and terminals.

rich is imported only when something is drawn on a terminal: a command whose
output is piped, and ``secrets get`` always, never load it.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from keystead.config import Config, load_config

if TYPE_CHECKING:  # rich and the vault load only when used (see the module docstring)
    from rich.console import Console
    from rich.text import Text

    from keystead.vault import Vault


@dataclass
class App:
    config_path: str | None = None
    profile: str | None = None
    debug: bool = False
    _config: Config | None = field(default=None, repr=False)
    _vault: Vault | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path, profile=self.profile)
        return self._config

    def load(self) -> Config:
        return self.config

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            from keystead.vault import Vault

            self._vault = Vault.open(self.config)
        return self._vault

    def close(self) -> None:
        if self._vault is not None:
            self._vault.close()
            self._vault = None


pass_app = click.make_pass_decorator(App)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def console() -> Console:
    """A rich console on standard output (for a terminal)."""
    return _console(stderr=False)


def err_console() -> Console:
    """A rich console on standard error."""
    return _console(stderr=True)


def _console(*, stderr: bool) -> Console:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich would exit 1; keystead/cli/__init__.py ends a closed pipe quietly with 0.
            raise BrokenPipeError

    return _Console(stderr=stderr, highlight=False)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


# -- messages and tables ---------------------------------------------------------------

# The only markup keystead's own messages use: a style around the start of a cell or line.
_MARKUP = re.compile(r"\[(red|yellow|green|bold|dim)\](.*?)\[/\]", re.S)


def plain(text: str) -> str:
    """``text`` without keystead's style markup."""
    return _MARKUP.sub(r"\2", text)


def _rich_text(text: str) -> Text:
    """``text`` as a rich Text, styling only keystead's markup (brackets in data stay as they are)."""
    from rich.text import Text

    out, pos = Text(), 0
    for m in _MARKUP.finditer(text):
        out.append(text[pos : m.start()])
        out.append(m.group(2), style=m.group(1))
        pos = m.end()
    out.append(text[pos:])
    return out


def say(message: str) -> None:
    """One message line on standard error: styled on a terminal, never wrapped."""
    if sys.stderr.isatty():
        err_console().print(_rich_text(message), soft_wrap=True)
    else:
        sys.stderr.write(plain(message) + "\n")
        sys.stderr.flush()


class Table:
    """The one table of the command line (keys list/show, status, rotate --dry-run, audit show).

    Piped (standard output is not a terminal): plain columns aligned with two
    spaces, full values, no ellipsis and no wrapping, under the title line.
    On a terminal: a rich table whose long cells fold onto more lines instead
    of being cut. ``--json`` is the machine format.
    """

    def __init__(self, *columns: str, title: str | None = None) -> None:
        self.columns = list(columns)
        self.title = title
        self.rows: list[list[str]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append([str(c) for c in cells])

    def print(self) -> None:
        if sys.stdout.isatty():
            self._print_rich()
        else:
            self._print_plain()

    def _print_plain(self) -> None:
        out = sys.stdout
        if self.title:
            out.write(plain(self.title) + "\n")
        rows = [self.columns] + [[plain(c).replace("\n", " ") for c in r] for r in self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]
        for r in rows:
            out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() + "\n")
        out.flush()

    def _print_rich(self) -> None:
        from rich.table import Table as RichTable

        table = RichTable(title=self.title)
        for name in self.columns:
            table.add_column(name, overflow="fold")
        for r in self.rows:
            table.add_row(*(_rich_text(c) for c in r))
        console().print(table)


def print_table(table: Table) -> None:
    table.print()


# -- Ctrl-C ----------------------------------------------------------------------------

OWNS_PROCESS = False
"""True in the console script (keystead.cli.entry.main): keystead's own process, whose signals it owns."""


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[threading.Event]:
    """SIGINT sets the yielded event instead of raising KeyboardInterrupt.

    For work that must finish the step it is in and then say what it did
    (``secrets import``): the work polls the event between steps. A Ctrl-C
    that comes after the work finished is ignored, so a finished command is
    never reported as interrupted. Outside the main thread (no signals) the
    event simply never fires.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    finished = False
    try:
        yield stop
        finished = True
    finally:
        # In the keystead process the work is done once it finished: a Ctrl-C from now on changes
        # nothing (so the finished command is never reported as interrupted). In a host process
        # (a test runner) the host's own handler comes back.
        signal.signal(signal.SIGINT, signal.SIG_IGN if finished and OWNS_PROCESS else previous)


# -- progress --------------------------------------------------------------------------

@contextlib.contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``: a progress bar on standard error when it is a terminal, else nothing drawn."""
    if not sys.stderr.isatty() or total <= 0:
        yield lambda _n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


# -- shell completion (click's: `eval "$(_KEYSTEAD_COMPLETE=bash_source keystead)"`) -------

def _completion_config(ctx: click.Context) -> Config | None:
    root = ctx.find_root()
    try:
        return load_config(root.params.get("config_path"), profile=root.params.get("profile"))
    except Exception:  # completion never fails loudly
        return None


def complete_secret(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Secret names of the store, for shell completion (never creates a store that is not there)."""
    from pathlib import Path

    config = _completion_config(ctx)
    if config is None:
        return []
    url = config.store_url
    path = Path(url[len("sqlite:///"):] if url.startswith("sqlite:///") else url[len("dir:"):])
    if not url.startswith(("sqlite:///", "dir:")) or not path.exists():
        return []
    try:
        from keystead.stores import open_store

        with open_store(url) as store:
            return [n for n in store.names() if n.startswith(incomplete)]
    except Exception:  # completion never fails loudly
        return []


def complete_key(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Key names of keystead.toml, for shell completion."""
    config = _completion_config(ctx)
    return [n for n in (config.keys if config else ()) if n.startswith(incomplete)]
