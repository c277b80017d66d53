"""Where a rebalancer starts reading when its group has committed nothing yet."""

from __future__ import annotations

from typer.testing import CliRunner

from streamfolio.cli import app
from streamfolio.config import load_config
from streamfolio.config.loading import example_config_path
from streamfolio.rebalancer.notify import Notifier
from streamfolio.rebalancer.service import RebalancerService


def _reset(**options: bool) -> str:
    service = RebalancerService(
        load_config(example_config_path(), environ={}),
        instance="test",
        notifier=Notifier(send=lambda _: True),
        **options,
    )
    return str(service._consumer_config()["auto.offset.reset"])


def test_a_new_group_starts_at_the_oldest_metrics_so_a_late_rebalancer_misses_none() -> None:
    # The job can write its first metrics before the rebalancer has joined its group (it
    # did on the Flink session cluster): starting at the newest records lost them for good.
    assert _reset() == "earliest"


def test_only_new_records_on_request() -> None:
    assert _reset(from_beginning=False) == "latest"


def test_the_command_says_where_it_starts() -> None:
    result = CliRunner().invoke(app, ["rebalancer", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "--from-beginning" in result.output and "--only-new" in result.output
