"""The `keystead` command line: the top of the import graph.

Every KeysteadError becomes one line on stderr and its family's exit code
(keystead/errors.py, docs/cli.md); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
import traceback

import click

from keystead import __version__
from keystead.cli.app import App
from keystead.errors import KeysteadError

INTERNAL_ERROR = 70


class KeysteadGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeysteadError as exc:
            if ctx.obj is not None and ctx.obj.debug:
                traceback.print_exc()
            click.echo(f"keystead: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("keystead: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: docs/cli.md promises one line and exit 70
            if ctx.obj is not None and ctx.obj.debug:
                traceback.print_exc()
            # Only the type: the message of an unexpected error may quote data.
            click.echo(f"keystead: error: internal error ({type(exc).__name__}); "
                       "run with --debug and report it", err=True)
            ctx.exit(INTERNAL_ERROR)


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


def _register() -> None:
    from keystead.cli.audit import audit
    from keystead.cli.keys import keys
    from keystead.cli.secrets import run, secrets
    from keystead.cli.setup import init

    for command in (init, secrets, run, keys, audit):
        cli.add_command(command)
    try:
        from keystead.cli.rotation import rotate, status, worker
    except ImportError:  # rotation commands land with the rotation engine
        pass
    else:
        for command in (rotate, worker, status):
            cli.add_command(command)
    try:
        from keystead.cli.policy import policy
    except ImportError:  # policy commands land with the IAM generator
        pass
    else:
        cli.add_command(policy)


_register()


def main() -> None:
    try:
        cli.main(prog_name="keystead")
    except KeysteadError as exc:  # raised outside a command (e.g. while closing)
        click.echo(f"keystead: error: {exc}", err=True)
        sys.exit(exc.exit_code)
