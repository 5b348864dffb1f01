"""What every command shares: the configuration and the vault, opened on first use."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import click
from rich.console import Console

from keystead.config import Config, load_config


@dataclass
class App:
    config_path: str | None = None
    profile: str | None = None
    debug: bool = False
    _config: Config | None = field(default=None, repr=False)
    _vault: object = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path, profile=self.profile)
        return self._config

    def load(self) -> Config:
        return self.config

    @property
    def vault(self):
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
    return Console(highlight=False)


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
