"""The `keystead` command line (placeholder until the foundation lands)."""

import click


@click.group()
def cli() -> None:
    """keystead"""


def main() -> None:
    cli()
