"""The `keystead` command line: the top of the import graph (``keystead.cli`` re-exports it).

Every KeysteadError becomes one line on stderr and its family's exit code
(keystead/errors.py, docs/cli.md); ``--debug`` shows the traceback instead.

Three things are handled here, once, for every command:

- a closed pipe (``keystead … | head``) ends the command quietly with exit 0:
  standard output is pointed at /dev/null so that nothing, not even the
  interpreter's flush at exit, reports the broken pipe;
- Ctrl-C prints ``keystead: interrupted`` (one line, exit 130), also while
  keystead is still starting up (``keystead/cli/__init__.py`` guards the
  imports) or parsing its arguments: the console script's SIGINT handler
  raises :class:`CtrlC`, which click does not turn into "Aborted!" and exit 1
  as it does a KeyboardInterrupt; once the command is over, a late Ctrl-C is
  ignored, so a finished command is never reported as interrupted;
- the global options ``--config``, ``--profile`` and ``--debug`` are accepted
  before or after the subcommand.

Subcommands are imported when they are invoked (``_COMMANDS``), so that
``keystead secrets get`` loads neither the rotation engine nor rich.
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys
import threading
import traceback
from types import FrameType
from typing import Any

import click

from keystead import __version__
from keystead.cli import app as app_module
from keystead.cli.app import App
from keystead.errors import KeysteadError

INTERNAL_ERROR = 70
INTERRUPTED = 130

#: command name -> "module:attribute", imported on first use.
_COMMANDS = {
    "init": "keystead.cli.setup:init",
    "secrets": "keystead.cli.secrets:secrets",
    "run": "keystead.cli.secrets:run",
    "keys": "keystead.cli.keys:keys",
    "audit": "keystead.cli.audit:audit",
    "rotate": "keystead.cli.rotation:rotate",
    "worker": "keystead.cli.rotation:worker",
    "status": "keystead.cli.rotation:status",
    "policy": "keystead.cli.policy:policy",
    "dr": "keystead.cli.dr:dr",
    "sign": "keystead.cli.sign:sign",
    "verify": "keystead.cli.sign:verify",
    "plan": "keystead.cli.plan:plan",
    "db": "keystead.cli.db:db",
    "stack": "keystead.cli.stack:stack",
    "hsm": "keystead.cli.hsm:hsm",
}


class CtrlC(BaseException):
    """Ctrl-C in the console script (our SIGINT handler raises it instead of KeyboardInterrupt)."""


def _raise_ctrl_c(_signum: int, _frame: FrameType | None) -> None:
    raise CtrlC()


class PipeClosed(Exception):
    """Standard output's reader went away (``| head``): end quietly."""


def _is_broken_pipe(exc: BaseException) -> bool:
    return isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE)


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null: the interpreter's final flush then succeeds silently."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real descriptor (click's test runner)
        pass


# -- global options, before or after the subcommand -----------------------------------

def _set_global(ctx: click.Context, param: click.Parameter, value: object) -> object:
    if value is None or value is False:
        return value
    app = ctx.find_object(App)
    if app is not None:
        setattr(app, param.name, value)
    return value


def _global_options() -> list[click.Option]:
    return [
        click.Option(["--config", "config_path"], type=click.Path(dir_okay=False), expose_value=False,
                     callback=_set_global, is_eager=True, help="keystead.toml to use (also before the command)."),
        click.Option(["--profile"], expose_value=False, callback=_set_global, is_eager=True,
                     help="Profile of keystead.toml (also before the command)."),
        click.Option(["--debug"], is_flag=True, default=None, expose_value=False, callback=_set_global,
                     is_eager=True, help="Show tracebacks (also before the command)."),
    ]


def _hoist_globals(command: click.Command) -> click.Command:
    """Give ``command`` (and its subcommands) the global options, once."""
    if getattr(command, "_keystead_globals", False):
        return command
    taken = {opt for p in command.params for opt in getattr(p, "opts", ())}
    command.params.extend(o for o in _global_options() if not taken & set(o.opts))
    command._keystead_globals = True  # type: ignore[attr-defined]  # our marker: click declares no such attribute
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _hoist_globals(sub)
    return command


class KeysteadGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in _COMMANDS:
            module, _, attr = _COMMANDS[name].partition(":")
            try:
                self.commands[name] = getattr(importlib.import_module(module), attr)
            except ImportError:  # a command whose engine is not installed
                return None
        command = self.commands.get(name)
        return _hoist_globals(command) if command is not None else None

    def invoke(self, ctx: click.Context) -> Any:  # click.Group.invoke returns the command's value, Any
        try:
            return super().invoke(ctx)
        except KeysteadError as exc:
            if ctx.obj is not None and ctx.obj.debug:
                traceback.print_exc()
            prefix = "keystead: " if exc.exit_code == INTERRUPTED else "keystead: error: "
            click.echo(f"{prefix}{exc}", err=True)
            ctx.exit(exc.exit_code)
        except (KeyboardInterrupt, CtrlC):
            click.echo("keystead: interrupted", err=True)
            ctx.exit(INTERRUPTED)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if _is_broken_pipe(exc):
                raise PipeClosed() from None
            # a bug: docs/cli.md promises one line and exit 70
            if ctx.obj is not None and ctx.obj.debug:
                traceback.print_exc()
            # Only the type: the message of an unexpected error may quote data.
            click.echo(f"keystead: error: internal error ({type(exc).__name__}); "
                       "run with --debug and report it", err=True)
            ctx.exit(INTERNAL_ERROR)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except PipeClosed:
            _silence_stdout()
            sys.exit(0)


@click.group(cls=KeysteadGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="KEYSTEAD_CONFIG",
              help="keystead.toml to use (default ./keystead.toml, or $KEYSTEAD_CONFIG).")
@click.option("--profile", envvar="KEYSTEAD_PROFILE", help="Profile of keystead.toml (or $KEYSTEAD_PROFILE).")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(__version__, prog_name="keystead")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, profile: str | None, debug: bool) -> None:
    """Keep KMS keys rotated and secrets envelope-encrypted."""
    ctx.obj = App(config_path=config_path, profile=profile, debug=debug)
    ctx.call_on_close(ctx.obj.close)


def main() -> None:
    """The console script ``keystead``."""
    owns_signals = threading.current_thread() is threading.main_thread()
    if owns_signals:
        signal.signal(signal.SIGINT, _raise_ctrl_c)
        app_module.OWNS_PROCESS = True
    code: int | str | None = 0
    try:
        cli.main(prog_name="keystead")
    except SystemExit as exc:
        code = exc.code
    except KeysteadError as exc:  # raised outside a command (e.g. while closing)
        click.echo(f"keystead: error: {exc}", err=True)
        code = exc.exit_code
    except (CtrlC, KeyboardInterrupt):  # between two commands' guards: still one line
        sys.stderr.write("keystead: interrupted\n")
        code = INTERRUPTED
    except Exception as exc:
        if not _is_broken_pipe(exc):
            raise
        _silence_stdout()
        code = 0
    finally:
        if owns_signals:  # the work is over: a Ctrl-C from now on changes nothing
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
