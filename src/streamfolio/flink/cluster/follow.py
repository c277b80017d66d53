"""``job submit --execute --follow``: stay with the job submitted to a session cluster, as
``job run`` stays with the job it runs, so that a supervisor (the demo) can treat a job on a
cluster like any child process.

:func:`follow_job` prints the job's state at each change and returns while the job lives on
the cluster only in the states it comes back from by itself (``RUNNING``, ``RESTARTING`` after
a lost TaskManager, ``CREATED`` while it waits for slots...): exit code 1 with the reason once
it has ended (``FAILED``, ``CANCELED``, ``FINISHED``) or the cluster stopped answering about it,
so the supervisor starts it again from its newest checkpoint. A stop (Ctrl-C, SIGTERM) cancels
the job, whose retained checkpoints stay, and returns 0: nothing the follower submitted is left
running on the cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from streamfolio.flink.cluster.rest import JobInfo, RestError

__all__ = [
    "ENDED",
    "UNANSWERED_LIMIT_S",
    "JobRest",
    "StatusFile",
    "cancel_job",
    "cancel_submitted",
    "failure_reason",
    "follow_job",
    "status_text",
]

ENDED = frozenset({"FAILED", "CANCELED", "FINISHED", "SUSPENDED"})
"""States the job does not leave by itself: the follower's run is over. (``SUSPENDED``: the
JobManager lost leadership; the job is no longer this cluster's to run.)"""
UNANSWERED_LIMIT_S = 30.0
"""How long the REST API may fail to say the job's state before the follower gives up on it
(a JobManager that died): long enough for a busy JobManager, short of hiding a lost cluster."""
CANCEL_WAIT_S = 5.0
"""After a stop, how long the follower waits to see the job cancelled (its slots freed)."""

Say = Callable[[str], None]


class JobRest(Protocol):
    """What the follower asks of the cluster's REST API (``FlinkRest``)."""

    def job_state(self, job_id: str) -> str: ...

    def cancel(self, job_id: str) -> None: ...

    def jobs(self) -> list[JobInfo]: ...


class StatusFile:
    """The follower's state for a supervisor (``STREAMFOLIO_STATUS_FILE``, as the components'
    broker watch writes it: ``{"state", "since", "pid"}``); None: nowhere. Never a reason to
    fail."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    @classmethod
    def from_environment(cls) -> StatusFile:
        from streamfolio.kafka.outage import STATUS_FILE_ENV

        found = os.environ.get(STATUS_FILE_ENV)
        return cls(Path(found) if found else None)

    def write(self, state: str) -> None:
        if self.path is None:
            return
        record = {"state": state, "since": time.time(), "pid": os.getpid()}
        with contextlib.suppress(OSError):
            self.path.write_text(json.dumps(record), encoding="utf-8")


def status_text(state: str) -> str:
    """A Flink job state as the demo's live view shows the job: ``running``, or what it does on
    the cluster.

    >>> status_text("RUNNING"), status_text("RESTARTING"), status_text("CREATED")
    ('running', 'restarting on the Flink cluster', 'waiting for slots on the Flink cluster')
    """
    if state == "RUNNING":
        return "running"
    if state == "CREATED":
        return "waiting for slots on the Flink cluster"
    return f"{state.lower()} on the Flink cluster"


def failure_reason(base_url: str, job_id: str, timeout_s: float = 10.0) -> str | None:
    """The first line of the job's newest failure (``GET /jobs/<id>/exceptions``: the
    exception history of Flink 2.x, or the root exception of older versions), or None."""
    url = f"{base_url.rstrip('/')}/jobs/{job_id}/exceptions"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            answer: Any = json.loads(response.read() or b"{}")
    except (OSError, ValueError):
        return None
    return _first_failure(answer)


def _first_failure(answer: Any) -> str | None:
    """
    >>> _first_failure({"exceptionHistory": {"entries": [
    ...     {"exceptionName": "java.lang.Exception", "stacktrace": "E: boom\\n\\tat x"}]}})
    'E: boom'
    >>> _first_failure({"root-exception": "R: gone\\nat y"}), _first_failure({})
    ('R: gone', None)
    """
    if not isinstance(answer, dict):
        return None
    entries = (answer.get("exceptionHistory") or {}).get("entries") or []
    text = ""
    if entries and isinstance(entries[0], dict):
        text = str(entries[0].get("stacktrace") or entries[0].get("exceptionName") or "")
    text = text or str(answer.get("root-exception") or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else None


def follow_job(
    job_id: str,
    rest: JobRest,
    say: Say,
    *,
    reason: Callable[[str], str | None] = lambda _job: None,
    status: StatusFile | None = None,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Follow the job ``job_id`` until it ends or a stop is requested; the exit code.

    Says each state change (``job <id>: RUNNING``). Returns 1, saying why (``reason``: the
    job's failure, for ``FAILED``), when the job has ended or the REST API has not said its
    state for :data:`UNANSWERED_LIMIT_S`; on ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM under
    ``stop_signals``) cancels the job and returns 0.
    """
    status = status or StatusFile(None)
    previous = ""
    unanswered_since: float | None = None
    try:
        while True:
            try:
                state = rest.job_state(job_id)
            except RestError as error:
                now = clock()
                if unanswered_since is None:
                    unanswered_since = now
                    say(f"job {job_id}: its state is unknown ({error}); asking again")
                elif now - unanswered_since >= UNANSWERED_LIMIT_S:
                    say(
                        f"job {job_id}: the cluster has not said its state for "
                        f"{now - unanswered_since:.0f} s ({error}); giving up on it"
                    )
                    return 1
                sleep(poll_s)
                continue
            unanswered_since = None
            if state != previous:
                say(f"job {job_id}: {state}")
                status.write(status_text(state))
                previous = state
            if state in ENDED:
                why = reason(job_id) if state == "FAILED" else None
                say(f"job {job_id} ended {state}" + (f": {why}" if why else ""))
                return 1
            sleep(poll_s)
    except KeyboardInterrupt:
        cancel_job(job_id, rest, say, clock=clock, sleep=sleep)
        return 0


def cancel_job(
    job_id: str,
    rest: JobRest,
    say: Say,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Cancel the job (deaf to further stops while at it) and wait up to
    :data:`CANCEL_WAIT_S` for it to be gone; a job that has ended already is left be."""
    with _deaf_to_stops():
        _cancel(job_id, rest, say, clock, sleep)


@contextlib.contextmanager
def _deaf_to_stops() -> Iterator[None]:
    """Within the block, Ctrl-C, SIGTERM and SIGHUP are ignored: a second stop (a supervisor
    escalating, an impatient Ctrl-C) must not cut the cancellation short and leave the job
    running on the cluster. Outside the main thread (where Python runs no handlers) nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _cancel(
    job_id: str,
    rest: JobRest,
    say: Say,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    try:
        if rest.job_state(job_id) in ENDED:
            say(f"stopping: job {job_id} had ended already")
            return
        rest.cancel(job_id)
    except RestError as error:
        say(f"stopping: could not cancel job {job_id} ({error}); `streamfolio job stop {job_id}`")
        return
    deadline = clock() + CANCEL_WAIT_S
    state = "CANCELLING"
    while clock() < deadline:
        with contextlib.suppress(RestError):
            state = rest.job_state(job_id)
        if state in ENDED:
            break
        sleep(0.2)
    say(
        f"stopping: cancelled job {job_id} ({state}); its checkpoints stay "
        "(resume with --from-checkpoint latest)"
    )


def cancel_submitted(
    rest: JobRest,
    since_ms: int,
    say: Say,
    *,
    name: str = "streamfolio",
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """After a stop that cut ``flink run`` short: cancel the jobs called ``name`` that started
    on the cluster since ``since_ms`` (wall-clock ms: when the submission began) and have not
    ended, which the interrupted submission may have started; their ids.

    The submission may have reached the JobManager just before the client died, so the
    cluster is asked after a short pause.
    """
    with _deaf_to_stops():
        sleep(1.0)
        try:
            found = [
                job.id
                for job in rest.jobs()
                if job.name == name and job.start_time_ms >= since_ms and job.state not in ENDED
            ]
            for job_id in found:
                rest.cancel(job_id)
        except RestError as error:
            say(
                f"stopped while submitting; could not ask the cluster for the job ({error}): "
                "see `streamfolio job status`"
            )
            return []
    say(
        "stopped while submitting"
        + (f"; cancelled job(s) {', '.join(found)} it had started" if found else "")
    )
    return found
