"""What every ``streamfolio`` subcommand shares: the --config option, progress, errors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from streamfolio.config import Settings

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="STREAMFOLIO_CONFIG",
        help="YAML configuration; also $STREAMFOLIO_CONFIG. Default: the packaged "
        "examples/cse.yaml.",
        show_default=False,
    ),
]


def say(line: str) -> None:
    """Progress and status for people: stderr, so stdout stays data."""
    typer.echo(line, err=True)


def fail(error: Exception) -> typer.Exit:
    """Print ``error`` in red on stderr; the caller raises the returned exit (code 2)."""
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def load_settings(config: Path | None) -> Settings:
    """The configuration at ``config``, or the packaged example when none is given."""
    from streamfolio.config import example_config_path, load_config

    return load_config(config if config is not None else example_config_path())
