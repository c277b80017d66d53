"""Environment, connectors, wiring and CLI of the job (no Kafka; one test starts a JVM)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pyflink
import pytest
from typer.testing import CliRunner

from streamfolio.config import Settings, settings_from_mapping
from streamfolio.flink.cli import job_app, submit_command
from streamfolio.flink.connectors import (
    JARS_ENV,
    ConnectorError,
    find_root,
    job_jars,
    sink_options,
)
from streamfolio.flink.job import parse_args, routing
from streamfolio.flink.routing import shard_of
from streamfolio.flink.runtime import (
    RESTART_ATTEMPTS_BEFORE_RESET,
    CheckpointNotFoundError,
    JobOptions,
    flink_configuration,
    latest_checkpoint,
    prepare_process,
)

ROOT = Path(__file__).resolve().parents[2]


def make_settings(**flink: object) -> Settings:
    return settings_from_mapping(
        {
            "portfolios": [
                {"id": "a", "tickers": ["X", "Y"], "weights": {"X": 0.5, "Y": 0.5}},
                {"id": "b", "tickers": ["Y"], "weights": {"Y": 1.0}, "bar_seconds": 300},
                {"id": "c", "tickers": ["Y", "Z"], "weights": {"Y": 0.5, "Z": 0.5}},
            ],
            "flink": flink,
        }
    )


def test_routing_gives_every_ticker_every_bar_size_and_each_shard_its_portfolios() -> None:
    r = routing(make_settings())
    # Any portfolio defined later may hold any ticker at any of the job's bar sizes.
    assert r.bar_sizes == {t: (60_000, 300_000) for t in ("X", "Y", "Z")}
    # Each ticker goes to the shards of the portfolios holding it, at their bar size...
    shard = {p: f"{r.specs[p].bar_ms}|{shard_of(p)}" for p in ("a", "b", "c")}
    assert set(r.shards[("Y", 60_000)]) == {shard["a"], shard["c"]}
    assert r.shards[("Y", 300_000)] == (shard["b"],)
    # ...and each shard knows its portfolios' tickers.
    assert r.members[shard["b"]] == {"b": ("Y",)}
    assert r.members[shard["c"]]["c"] == ("Y", "Z")
    assert r.specs["b"].bar_ms == 300_000


def test_configuration_for_python_mode_checkpoints_and_bounded_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMFOLIO_FLINK_PYTHON_MODE", raising=False)
    s = make_settings(checkpoint_dir=str(tmp_path / "ck"), checkpoint_interval_ms=1234)
    one = flink_configuration(s, JobOptions.from_settings(s, parallelism=1), [])
    assert one["python.execution-mode"] == "thread"  # the fastest, where it does not hang
    conf = flink_configuration(s, JobOptions.from_settings(s, parallelism=2), [tmp_path / "k.jar"])
    assert conf["python.execution-mode"] == "process"
    assert conf["python.executable"] == sys.executable
    assert conf["parallelism.default"] == "2"
    assert conf["execution.checkpointing.interval"] == "1234 ms"
    assert conf["execution.checkpointing.dir"] == (tmp_path / "ck").as_uri()
    assert conf["execution.checkpointing.externalized-checkpoint-retention"] == (
        "RETAIN_ON_CANCELLATION"
    )
    assert conf["restart-strategy.type"] == "exponential-delay"
    assert conf["restart-strategy.exponential-delay.attempts-before-reset-backoff"] == str(
        RESTART_ATTEMPTS_BEFORE_RESET
    )
    assert conf["pipeline.jars"] == (tmp_path / "k.jar").as_uri()
    assert "execution.state-recovery.path" not in conf
    rocks = make_settings(state_backend="rocksdb")
    conf = flink_configuration(rocks, JobOptions.from_settings(rocks), [])
    assert conf["state.backend.type"] == "rocksdb"
    assert conf["execution.checkpointing.incremental"] == "true"


def _checkpoint(root: Path, job: str, n: int, *, complete: bool = True) -> Path:
    path = root / job / f"chk-{n}"
    path.mkdir(parents=True)
    if complete:
        (path / "_metadata").write_bytes(b"x")
    return path


def test_latest_checkpoint_is_the_newest_complete_one(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    old = _checkpoint(tmp_path, "job1", 7)
    os.utime(old / "_metadata", (time.time() - 100, time.time() - 100))
    newest = _checkpoint(tmp_path, "job2", 2)
    _checkpoint(tmp_path, "job2", 3, complete=False)  # cut off by a crash: no _metadata
    assert latest_checkpoint(tmp_path) == newest
    s = make_settings(checkpoint_dir=str(tmp_path))
    options = JobOptions.from_settings(s, from_checkpoint="latest").with_restore_path()
    assert options.from_checkpoint == str(newest)
    conf = flink_configuration(s, options, [])
    assert conf["execution.state-recovery.path"] == newest.as_uri()


def test_resuming_from_latest_without_a_checkpoint_says_so(tmp_path: Path) -> None:
    s = make_settings(checkpoint_dir=str(tmp_path / "none"))
    with pytest.raises(CheckpointNotFoundError, match="no complete checkpoint"):
        JobOptions.from_settings(s, from_checkpoint="latest").with_restore_path()


def test_the_interpreter_comes_first_on_path_for_thread_mode() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    prepare_process(env)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    before = env["PATH"]
    prepare_process(env)
    assert env["PATH"] == before  # idempotent


def test_sinks_are_keyed_and_exactly_once_has_transactions_within_the_broker_limit() -> None:
    s = make_settings()
    keyed = sink_options(
        s, "updated_stats", keyed=True, delivery="at-least-once", transactional_id_prefix="p"
    )
    assert keyed["topic"] == s.topics.updated_stats
    assert (keyed["key.format"], keyed["key.fields"], keyed["value.format"]) == ("raw", "k", "raw")
    assert "sink.transactional-id-prefix" not in keyed
    dead = sink_options(
        s, "dead_letter", keyed=False, delivery="exactly-once", transactional_id_prefix="p"
    )
    assert "key.format" not in dead
    assert dead["sink.delivery-guarantee"] == "exactly-once"
    assert dead["sink.transactional-id-prefix"] == "p-dead_letter"
    assert int(dead["properties.transaction.timeout.ms"]) <= 900_000


def test_jars_come_from_the_environment_or_the_checkout(tmp_path: Path) -> None:
    jar = tmp_path / "flink-sql-connector-kafka-5.0.0-2.2.jar"
    jar.write_bytes(b"")
    function = tmp_path / "streamfolio-event-time.jar"
    function.write_bytes(b"")
    assert job_jars(environ={JARS_ENV: str(tmp_path)}) == [jar, function]
    with pytest.raises(ConnectorError, match=r"no streamfolio-event-time\.jar"):
        job_jars(environ={JARS_ENV: str(jar)})
    with pytest.raises(ConnectorError, match="no flink-sql-connector-kafka"):
        (tmp_path / "other.jar").write_bytes(b"")
        job_jars(environ={JARS_ENV: str(tmp_path / "other.jar")})
    assert find_root(ROOT / "src") == ROOT


def test_job_arguments() -> None:
    args = parse_args(["--config", "c.yaml", "--from-checkpoint", "latest", "--bounded"])
    assert (args.config, args.from_checkpoint, args.bounded, args.delivery) == (
        "c.yaml",
        "latest",
        True,
        None,
    )


def test_submit_prints_a_flink_run_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jar = tmp_path / "flink-sql-connector-kafka-5.0.0-2.2.jar"
    jar.write_bytes(b"")
    (tmp_path / "streamfolio-event-time.jar").write_bytes(b"")
    monkeypatch.setenv(JARS_ENV, str(tmp_path))
    monkeypatch.setenv("FLINK_HOME", "/opt/flink")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"portfolios": [{"id": "a", "tickers": ["X"]}]}))
    result = CliRunner().invoke(
        job_app,
        ["submit", "--config", str(config), "--parallelism", "2", "--delivery", "exactly-once"],
    )
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    # By default the local cluster of `flink up`, with the wheel's own client (Flink 2.x's
    # `flink run` has no --jarfile: the jars go in pipeline.jars).
    wheel_flink = Path(pyflink.__file__).resolve().parent / "bin" / "flink"
    words = shlex.split(line)
    assert words[:5] == [str(wheel_flink), "run", "--detached", "-m", "localhost:8081"]
    assert words[5].startswith("-Dpipeline.jars=" + jar.resolve().as_uri())
    assert "--python " + str(ROOT / "src/streamfolio/flink/job.py") in line
    assert line.endswith(f"--config {config} --parallelism 2 --delivery exactly-once")
    elsewhere = CliRunner().invoke(
        job_app, ["submit", "--config", str(config), "--target", "kubernetes-application"]
    )
    assert elsewhere.output.startswith("/opt/flink/bin/flink run --detached --target "), (
        elsewhere.output
    )
    command = submit_command([], jars=[], python="py", target="remote", detached=False)
    assert command[1:4] == ["run", "--target", "remote"]


def test_bad_cli_choices_are_refused() -> None:
    result = CliRunner().invoke(job_app, ["run", "--delivery", "twice"])
    assert result.exit_code != 0
    assert "twice" in result.output


PLAN_SCRIPT = """
import json, sys
from streamfolio.config import load_config
from streamfolio.flink.job import build_pipeline
from streamfolio.flink.runtime import JobOptions, create_environment
settings = load_config(sys.argv[1])
env = create_environment(settings, JobOptions.from_settings(settings))
build_pipeline(env, settings)
print(env.get_execution_plan())
"""


@pytest.mark.slow
def test_the_pipeline_builds_into_one_job_graph(tmp_path: Path) -> None:
    """Wiring only, in a child process (the JVM outlives the call that starts it): the graph
    has every operator, each with the name the docs use."""
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"portfolios": [{"id": "a", "tickers": ["X"]}]}))
    done = subprocess.run(
        [sys.executable, "-c", PLAN_SCRIPT, str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads(done.stdout[done.stdout.index("{") :])
    names = " | ".join(node["contents"] for node in plan["nodes"])
    for name in (
        "prices",
        "initial_stats",
        "weights",
        "decode_tick",
        "WindowRank",
        "chain closes",
        "collect closes",
        "gather bars",
        "decode stats",
        "decode weights",
        "portfolio statistics",
    ):
        assert name in names
