"""The demo's supervisor with real (tiny) child processes: a component that exits is restarted
with back-off, its log goes on after a restart line; with ``--on-failure stop``, or past the
restart cap, the demo stops with the reason and the log path (issue #13, item 3). No broker."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from streamfolio.cli import app
from streamfolio.config import example_config_path, load_config
from streamfolio.demo import Failure, RestartPolicy, Supervisor, supervise
from streamfolio.demo.live import live_view
from streamfolio.demo.supervision import OnFailure

EXIT_3 = [sys.executable, "-c", "print('run', flush=True); import sys; sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]

MakeSupervisor = Callable[..., Supervisor]


def _fast() -> RestartPolicy:
    return RestartPolicy(first_delay_s=0.05, max_delay_s=0.2, max_restarts=3, window_s=60)


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def make_supervisor(tmp_path: Path, lines: list[str]) -> Iterator[MakeSupervisor]:
    made: list[Supervisor] = []

    def make(on_failure: OnFailure = "restart") -> Supervisor:
        supervisor = Supervisor(tmp_path, lines.append, on_failure=on_failure, policy=_fast)
        made.append(supervisor)
        return supervisor

    yield make
    for supervisor in made:  # nothing left running, whatever a test asserted
        supervisor.stop_all(timeout=2)


def _until_failure(supervisor: Supervisor, timeout: float = 30) -> Failure:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        failure = supervisor.check()
        if failure is not None:
            return failure
        time.sleep(0.02)
    raise AssertionError("the supervisor never gave up")


def _wait_exit(supervisor: Supervisor, name: str) -> None:
    child = next(c for c in supervisor.children if c.name == name)
    child.process.wait(timeout=30)


def test_a_component_that_exits_is_restarted_until_the_cap_its_log_appended(
    make_supervisor: MakeSupervisor, lines: list[str]
) -> None:
    supervisor = make_supervisor()
    again = [sys.executable, "-c", "print('again', flush=True); import sys; sys.exit(3)"]
    child = supervisor.start("job", EXIT_3, restart_argv=lambda: again)

    failure = _until_failure(supervisor)

    assert failure.child is child and child.restarts == 3 and child.outcome == "failed"
    assert failure.reason == "job exited (exit code 3) after more than 3 restarts within 60 s"
    assert failure.message.endswith(f"see {child.log_path}")
    log = child.log_path.read_text()
    assert log.splitlines()[0] == "run", "the first run's output is kept"
    assert log.count("again") == 3, "each restart asks for its command (the job: a checkpoint)"
    for n in (1, 2, 3):
        assert f"----- streamfolio demo: restart {n} of job at " in log
    assert "(the previous run ended: exit code 3) -----" in log
    said = "\n".join(lines)
    assert "job exited (exit code 3); restarting in 0.05 s" in said
    assert "restarting in 0.1 s" in said and "restarting in 0.2 s" in said
    assert "restarted job (pid" in said


def test_any_exit_while_running_is_unexpected_but_a_finished_replay_is_not(
    make_supervisor: MakeSupervisor, lines: list[str]
) -> None:
    supervisor = make_supervisor()
    done = [sys.executable, "-c", "pass"]
    supervisor.start("feed", done, may_finish=True)
    dashboard = supervisor.start("dashboard", done)
    for name in ("feed", "dashboard"):
        _wait_exit(supervisor, name)

    assert supervisor.check() is None
    states = {v.name: (v.state, v.detail) for v in supervisor.views()}
    assert states["feed"] == ("finished", "exit code 0")
    assert states["dashboard"][0] == "restarting"
    assert dashboard.restart_at is not None
    assert "feed finished (exit code 0)" in lines
    assert any(line.startswith("dashboard exited (exit code 0); restarting") for line in lines)


def test_on_failure_stop_gives_up_at_the_first_exit(
    make_supervisor: MakeSupervisor,
) -> None:
    supervisor = make_supervisor("stop")
    supervisor.start("store", SLEEP)
    rebalancer = supervisor.start("rebalancer", EXIT_3)

    failure = _until_failure(supervisor)

    assert failure.child is rebalancer and rebalancer.restarts == 0
    assert failure.message == (
        f"rebalancer exited (exit code 3); --on-failure stop; see {rebalancer.log_path}"
    )
    views = {v.name: v for v in supervisor.views()}
    assert (views["rebalancer"].state, views["rebalancer"].detail) == ("failed", "exit code 3")
    assert views["store"].state == "running"


class _NoRecords:
    def poll(self, _timeout: float) -> None:
        time.sleep(0.05)

    def close(self) -> None:
        pass


def test_the_demo_stops_everything_with_the_reason_and_the_log_path(
    make_supervisor: MakeSupervisor, lines: list[str]
) -> None:
    """The live view's loop gives up as the demo does: exit 1, the reason and the log, and the
    shutdown stops the other components."""
    settings = load_config(example_config_path().with_name("demo.yaml"))
    supervisor = make_supervisor("stop")
    store = supervisor.start("store", SLEEP)
    job = supervisor.start("job", EXIT_3)
    console = Console(record=True, width=300, force_terminal=False)

    def body() -> int:
        return live_view(
            settings,
            supervisor,
            30,
            console,
            live_cls=None,
            consumer_factory=lambda _settings: _NoRecords(),
        )

    code = supervise(body, lambda: supervisor.stop_all(timeout=2), lines.append)

    assert code == 1
    shown = console.export_text()
    assert f"job exited (exit code 3); --on-failure stop; see {job.log_path}" in shown
    assert "stopping the demo" in shown
    assert store.process.returncode is not None, "the other components are stopped"
    assert "stopping store" in lines and lines[-1] == "demo stopped; nothing left running"


def test_a_stop_cancels_a_pending_restart(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path, lambda _line: None, policy=lambda: RestartPolicy(60, 60))
    child = supervisor.start("feed", EXIT_3)
    child.process.wait(timeout=30)
    assert supervisor.check() is None and child.restart_at is not None

    supervisor.stop_all(timeout=2)

    assert supervisor.check() is None
    assert child.restarts == 0 and child.restart_at is None
    assert [(v.state, v.detail) for v in supervisor.views()] == [("stopped", "exit code 3")]


_WRITES_STATUS = """
import json, os, sys, time
with open(os.environ["STREAMFOLIO_STATUS_FILE"], "w") as f:
    json.dump({"state": "waiting for the broker", "since": time.time() - 12,
               "pid": os.getpid() + int(sys.argv[1])}, f)
open(os.environ["STREAMFOLIO_STATUS_FILE"] + ".ready", "w").close()
time.sleep(60)
"""


@pytest.mark.parametrize(("pid_offset", "state"), [(0, "waiting for the broker"), (1, "running")])
def test_the_state_a_component_writes_is_shown_when_it_is_its_own(
    make_supervisor: MakeSupervisor, pid_offset: int, state: str
) -> None:
    supervisor = make_supervisor()
    child = supervisor.start("store", [sys.executable, "-c", _WRITES_STATUS, str(pid_offset)])
    assert child.status_path == child.log_path.with_name("store.status")
    ready = Path(f"{child.status_path}.ready")
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline and child.process.poll() is None
        time.sleep(0.02)
    assert json.loads(child.status_path.read_text())["state"] == "waiting for the broker"

    [view] = supervisor.views()

    assert view.state == state
    if pid_offset == 0:
        assert view.detail.startswith("for 1")  # 12 s, or 13 on a slow machine
    else:  # another process's file: an earlier run's, before a restart
        assert view.detail == f"pid {child.process.pid}"


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["demo", "--on-failure", "retry"], "--on-failure must be restart or stop, not 'retry'"),
        (["demo", "--offline", "--on-failure", "stop"], "--on-failure: not used by --offline"),
    ],
)
def test_on_failure_is_checked(args: list[str], expected: str) -> None:
    result = runner.invoke(app, args, env={"STREAMFOLIO_CONFIG": "", "COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert expected in result.output


def test_the_help_says_what_on_failure_does() -> None:
    result = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.output.split())
    assert (
        "restart|stop" in text and "More than 5 restarts" in text and "[default: restart]" in text
    )
