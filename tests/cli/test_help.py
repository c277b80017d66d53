"""Every command and sub-command of ``streamfolio`` has a help page that renders, and flags show
no ``<bool>`` type (they take no value)."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from streamfolio.cli import app

runner = CliRunner()


def _paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``command`` (the root included), walking the click tree."""
    found = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += _paths(sub, (*path, name))
    return found


PATHS = _paths(typer.main.get_command(app))


def test_the_tree_holds_every_command() -> None:
    names = {" ".join(p) for p in PATHS}
    expected = {"init", "replay", "simulate", "demo", "feed", "fetch-history", "topic tail"}
    expected |= {"topic produce", "kafka up", "kafka down", "kafka status", "job run"}
    expected |= {"job submit", "store", "report", "rebalancer", "dashboard"}
    assert expected <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "streamfolio")
def test_help_renders_without_bool_types(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert "<bool>" not in result.output, result.output


def test_demo_help_names_its_own_default_config() -> None:
    result = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "160"})
    assert "examples/demo.yaml" in result.output
    assert "examples/cse.yaml" not in result.output
