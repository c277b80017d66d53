"""`streamfolio demo` is safe: a stop signal stops everything it started, and it deletes topics
only on the local broker it started (issue #11, items 4 and 5). No Kafka needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from streamfolio.config import KafkaSettings, Settings, settings_from_mapping
from streamfolio.demo import (
    StopRequested,
    check_local_cluster,
    local_cluster_id,
    stop_signals,
    supervise,
)
from streamfolio.errors import ConfigError
from streamfolio.kafka.local import LocalKafka

# --------------------------------------------------------------------------- stop signals

# The demo's own supervision (supervise + Supervisor), with `sleep`s for the job, the feed...
# One child ignores SIGINT, so the shutdown has to escalate to SIGTERM for it.
_SCRIPT = textwrap.dedent(
    """
    import functools, sys, time
    from pathlib import Path
    from streamfolio.demo import Supervisor, supervise

    out = Path(sys.argv[1])
    def progress(line):
        print(line, file=sys.stderr, flush=True)
    supervisor = Supervisor(out / "logs", progress)

    def body():
        for name in ("job", "feed", "rebalancer", "store"):
            supervisor.start(name, ["sleep", "1000"])
        supervisor.start("dashboard", [sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(1000)"])
        pids = " ".join(str(c.process.pid) for c in supervisor.children)
        (out / "pids.tmp").write_text(pids)
        (out / "pids.tmp").rename(out / "pids")
        while True:
            time.sleep(0.05)

    def shutdown():
        supervisor.stop_all(timeout=1.0)
        (out / "shutdown").write_text("done")

    sys.exit(supervise(body, shutdown, progress))
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child the demo has not reaped yet is a zombie: dead all the same.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_stops_every_child_as_ctrl_c_does(
    tmp_path: Path, sig: signal.Signals
) -> None:
    script = tmp_path / "demo_like.py"
    script.write_text(_SCRIPT)
    demo = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its own session, as from a terminal: the signal reaches the demo alone.
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "pids").exists():
            assert demo.poll() is None, demo.communicate()
            assert time.monotonic() < deadline, "the fake children never started"
            time.sleep(0.05)
        pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
        assert all(_alive(p) for p in pids)

        demo.send_signal(sig)
        _, err = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    name = "Ctrl-C" if sig == signal.SIGINT else sig.name
    assert demo.returncode == 0, err
    assert f"{name}: stopping" in err
    assert err.rstrip().endswith("demo stopped; nothing left running"), err
    assert (tmp_path / "shutdown").read_text() == "done"
    # Stopped newest first, in order, as on Ctrl-C.
    stopped = [line.split()[-1] for line in err.splitlines() if line.startswith("stopping ")]
    assert stopped == ["dashboard", "store", "rebalancer", "feed", "job"]
    assert not [p for p in pids if _alive(p)], "children left running"


def test_stop_signals_raise_in_the_main_thread_and_restore_the_handlers() -> None:
    def mine(_signum: int, _frame: object) -> None:  # pragma: no cover - never called
        pass

    before = {sig: signal.signal(sig, mine) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            with pytest.raises(StopRequested) as stopped, stop_signals():
                os.kill(os.getpid(), sig)
                time.sleep(5)  # interrupted by the handler at once
            assert stopped.value.signum == sig
            assert signal.getsignal(signal.SIGTERM) is mine
            assert signal.getsignal(signal.SIGHUP) is mine
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_supervise_shuts_down_and_returns_zero_on_a_stop_and_the_body_code_otherwise() -> None:
    lines: list[str] = []
    stopped: list[str] = []

    def interrupted() -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 3  # pragma: no cover - never reached

    assert supervise(interrupted, lambda: stopped.append("x"), lines.append) == 0
    assert stopped == ["x"] and lines == ["SIGTERM: stopping", "demo stopped; nothing left running"]

    assert supervise(lambda: 1, lambda: stopped.append("y"), lines.append) == 1
    assert stopped == ["x", "y"]

    def broken() -> int:
        raise ConfigError("kafka.bootstrap_servers", "nope")

    with pytest.raises(ConfigError):
        supervise(broken, lambda: stopped.append("z"), lines.append)
    assert stopped == ["x", "y", "z"], "an error still stops what was started"


# ------------------------------------------------------------------ topics: the local broker


CLUSTER = "d65oAPWOS464dln6JzLELw"


def _broker(tmp_path: Path, cluster: str | None = CLUSTER) -> LocalKafka:
    data = tmp_path / "kafka"
    (data / "kraft").mkdir(parents=True)
    if cluster is not None:
        (data / "kraft" / "meta.properties").write_text(
            f"#\nnode.id=1\nversion=1\ncluster.id={cluster}\n", encoding="utf-8"
        )
    kafka = KafkaSettings(local={"data_dir": data})
    return LocalKafka(kafka, tmp_path)


def _settings(bootstrap: str) -> Settings:
    return settings_from_mapping(
        {
            "kafka": {"bootstrap_servers": bootstrap},
            "portfolios": [{"id": "p", "tickers": ["ATW"]}],
        }
    )


def test_the_local_cluster_id_comes_from_the_data_dir(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    assert local_cluster_id(broker.data_dir) == CLUSTER
    (broker.data_dir / "kraft" / "meta.properties").unlink()
    (broker.data_dir / "cluster.id").write_text("other\n")
    assert local_cluster_id(broker.data_dir) == "other"


@pytest.mark.parametrize("bootstrap", ["localhost:9092", "127.0.0.1:9092", "my-laptop:9092"])
def test_topics_are_reset_on_the_local_cluster_however_it_is_named(
    tmp_path: Path, bootstrap: str
) -> None:
    seen: list[str] = []

    def describe(settings: Settings) -> str:
        seen.append(settings.kafka.bootstrap_servers)
        return CLUSTER

    check_local_cluster(_settings(bootstrap), _broker(tmp_path), describe, environ={})
    assert seen == [bootstrap]


def test_a_remote_cluster_is_refused_naming_the_key_the_value_and_the_fix(
    tmp_path: Path,
) -> None:
    remote = "kafka-prod.example.com:9092"
    with pytest.raises(ConfigError) as refused:
        check_local_cluster(
            _settings(remote),
            _broker(tmp_path),
            lambda _settings: "PRODUCTION-cluster-id",
            environ={"STREAMFOLIO_KAFKA__BOOTSTRAP_SERVERS": remote},
        )
    text = str(refused.value)
    assert refused.value.key == "kafka.bootstrap_servers"
    assert remote in text and "PRODUCTION-cluster-id" in text and CLUSTER in text
    assert "the demo only resets topics on the local broker it started" in text
    assert "STREAMFOLIO_KAFKA__BOOTSTRAP_SERVERS" in text
    assert "localhost:9092" in text and "--keep-topics" in text


def test_a_cluster_that_cannot_be_described_is_refused(tmp_path: Path) -> None:
    def unreachable(_settings: Settings) -> str:
        raise TimeoutError("no answer")

    with pytest.raises(ConfigError, match="could not be read"):
        check_local_cluster(_settings("localhost:9092"), _broker(tmp_path), unreachable, environ={})


def test_without_a_local_cluster_id_only_the_local_port_will_do(tmp_path: Path) -> None:
    broker = _broker(tmp_path, cluster=None)

    def never(_settings: Settings) -> str:
        raise AssertionError("not asked")

    check_local_cluster(_settings("127.0.0.1:9092"), broker, never, environ={})
    for other in ("localhost:9093", "kafka.example.com:9092", "localhost:9092,remote:9092"):
        with pytest.raises(ConfigError, match="not the local broker's address"):
            check_local_cluster(_settings(other), broker, never, environ={})


def test_the_demo_refuses_a_remote_cluster_before_deleting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamfolio import demo
    from streamfolio.config import example_config_path
    from streamfolio.demo import safety
    from streamfolio.kafka import local

    calls: list[str] = []

    class FakeBroker(LocalKafka):
        def is_running(self) -> bool:
            return False

        def up(self, *_args: object, **_kwargs: object) -> None:  # type: ignore[override]
            calls.append("up")

        def down(self, timeout: float = 30.0) -> bool:
            calls.append("down")
            return True

    def fake_broker(settings: KafkaSettings, root: Path, **kwargs: object) -> LocalKafka:
        return FakeBroker(settings.model_copy(update={"local": _broker(tmp_path).local}), root)

    monkeypatch.setenv("STREAMFOLIO_KAFKA__BOOTSTRAP_SERVERS", "kafka-prod.example.com:9092")
    monkeypatch.setattr(local, "LocalKafka", fake_broker)
    monkeypatch.setattr(safety, "cluster_id", lambda _settings, timeout=10.0: "PRODUCTION")
    monkeypatch.setattr(safety, "reset_topics", lambda *_: calls.append("DELETED"))
    options = demo.DemoOptions(
        config_path=example_config_path().with_name("demo.yaml"), log_dir=tmp_path / "logs"
    )
    with pytest.raises(ConfigError, match=r"kafka-prod\.example\.com:9092"):
        demo.run_demo(options, progress=lambda _line: None)
    assert calls == ["up", "down"], "nothing deleted; the broker it started is stopped again"
