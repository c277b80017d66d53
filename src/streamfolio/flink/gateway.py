"""The Flink JVM of ``job run``: what it logs during a broker outage, and taking it down.

PyFlink launches a JVM (its "gateway": the MiniCluster that runs the job, and in process mode
the parent of the job's Python workers) and keeps no handle on it. :func:`track_gateway` wraps
the launch: it remembers the process, for :func:`stop_gateway` to terminate on the way out (left
alone it would follow only once its watchdog notices that the driver has gone), and adds
:data:`QUIET_LOGGERS` to its log4j configuration.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "JVM_STOP_S",
    "QUIET_LOGGERS",
    "log4j_levels",
    "stop_gateway",
    "track_gateway",
]

JVM_STOP_S = 3.0
"""How long the JVM may take to shut down after SIGTERM before it is killed: with the driver's
own exit, within the 5 s a component has to stop."""

_KAFKA = "org.apache.flink.kafka.shaded.org.apache.kafka.clients"  # as the connector jar has it
QUIET_LOGGERS: Mapping[str, str] = {
    f"{_KAFKA}.Metadata": "WARN",
    f"{_KAFKA}.admin.internals.AdminMetadataManager": "WARN",
}
"""Loggers of the job's Kafka clients held at WARN in Flink's log. While no broker answers, every
client logs ``Rebootstrapping with ...`` at INFO on each attempt (kafka-clients 4.2): about
1 MB a minute with the job running, 100 MB a minute when the broker went away as it started.
Their warnings (a connection that could not be established, once per back-off) stay."""

_gateways: list[subprocess.Popen[bytes]] = []
_scratch: list[Path] = []


def log4j_levels(levels: Mapping[str, str]) -> str:
    """A log4j2 properties file setting the level of each logger in ``levels``, to be merged
    into another configuration (log4j2 composes the files of a comma-separated list).

    >>> print(log4j_levels({"org.example.Chatty": "WARN"}), end="")
    logger.streamfolio0.name = org.example.Chatty
    logger.streamfolio0.level = WARN
    """
    return "".join(
        f"logger.streamfolio{n}.name = {name}\nlogger.streamfolio{n}.level = {level}\n"
        for n, (name, level) in enumerate(levels.items())
    )


def _quiet_kafka_logs(env: dict[str, str]) -> None:
    """Add :data:`QUIET_LOGGERS` to the log4j configuration the JVM gets (pyflink's own, from
    ``$FLINK_CONF_DIR``), unless ``LOG4J_PROPERTIES`` names one already."""
    from pyflink.pyflink_gateway_server import prepare_environment_variables

    if "LOG4J_PROPERTIES" in env:
        return
    prepare_environment_variables(env)  # what the launch does first: sets FLINK_CONF_DIR
    scratch = Path(tempfile.mkdtemp(prefix="streamfolio-log4j-"))
    _scratch.append(scratch)
    quiet = scratch / "quiet-kafka-clients.properties"
    quiet.write_text(log4j_levels(QUIET_LOGGERS), encoding="utf-8")
    env["LOG4J_PROPERTIES"] = f"{Path(env['FLINK_CONF_DIR']) / 'log4j-cli.properties'},{quiet}"


def track_gateway() -> None:
    """Wrap PyFlink's launch of its JVM: remember the process, quieten its Kafka clients.

    Call before the first PyFlink object is made; calling it again changes nothing.
    """
    from pyflink import java_gateway

    launch = java_gateway.launch_gateway_server_process
    if getattr(launch, "streamfolio_tracked", False):
        return

    def tracked(env: dict[str, str], args: list[str]) -> subprocess.Popen[bytes]:
        _quiet_kafka_logs(env)  # env: the JVM's own copy of the environment
        process: subprocess.Popen[bytes] = launch(env, args)
        _gateways.append(process)
        return process

    tracked.streamfolio_tracked = True  # type: ignore[attr-defined]
    java_gateway.launch_gateway_server_process = tracked


def stop_gateway(timeout_s: float = JVM_STOP_S) -> None:
    """Terminate the JVMs this process launched; kill those still there after ``timeout_s``.
    Returns once they are gone (and reaped)."""
    if _gateways:  # even one gone already (a signal to the whole process group, say)
        _disconnect_py4j()
    running = [p for p in _gateways if p.poll() is None]
    try:
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout_s
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
    finally:  # also when a second Ctrl-C cuts the wait short
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
        while _scratch:
            shutil.rmtree(_scratch.pop(), ignore_errors=True)


def _disconnect_py4j() -> None:
    """Make py4j stop calling the JVM that is about to go: otherwise every Java object still
    referenced is released with a call to it at exit, each failing with a logged traceback."""
    from pyflink import java_gateway

    # PyFlink's gateway, if it got as far as connecting (get_gateway() would launch one), and
    # py4j's own switch, checked before each call: private names, hence the care.
    gateway = getattr(java_gateway, "_gateway", None)
    client = getattr(gateway, "_gateway_client", None)
    if client is not None:
        client.is_connected = False
