"""``flink run``: the command that submits the job to a cluster, and the job id it answers.

The job is ``streamfolio/flink/job.py`` run by the client (``-pyclientexec``) to build the job
graph, its Python functions run by ``-pyexec`` on the TaskManagers: both this environment's
interpreter by default, which has streamfolio installed, so every process imports the same
code. Flink 2.x's ``flink run`` has no ``--jarfile``: the connector jars go in
``pipeline.jars``, which the client uploads with the job (the job's own configuration names
them too, ``runtime.flink_configuration``). ``--pyFiles`` ships :data:`WORKER_SITE`, without
which the workers of process mode fail to import the job's modules. Resuming needs no
``--fromSavepoint``: the job's ``--from-checkpoint PATH`` sets ``execution.state-recovery.path``
in the job's own configuration, which a session cluster honours like the MiniCluster (tested).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from streamfolio.flink.cluster.processes import ClusterError

__all__ = ["JOB_ID", "WORKER_SITE", "flink_binary", "job_id_of", "run_submit", "submit_command"]

WORKER_SITE = Path(__file__).resolve().parents[1] / "worker_site"
"""Shipped with the job (``--pyFiles``): its ``sitecustomize`` imports the job's modules in each
Python worker before the worker's threads do (``streamfolio.flink.worker_site.sitecustomize``)."""
JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")
"""How ``flink run --detached`` names the job it submitted."""


def flink_binary() -> str:
    """``$FLINK_HOME/bin/flink`` if set, else the one shipped in the apache-flink wheel."""
    home = os.environ.get("FLINK_HOME")
    if home:
        return str(Path(home) / "bin" / "flink")
    from streamfolio.flink.cluster.layout import distribution

    return str(distribution() / "bin" / "flink")


def submit_command(
    job_args: Sequence[str],
    *,
    jars: Sequence[Path],
    python: str,
    target: str | None = None,
    jobmanager: str | None = None,
    detached: bool = True,
    binary: str | None = None,
) -> list[str]:
    """The ``flink run`` command line that submits the job.

    >>> submit_command(["--config", "/etc/sf.yaml"], jars=[Path("/j/kafka.jar")],
    ...                python="/venv/bin/python", jobmanager="localhost:8081",
    ...                binary="flink")[:6]
    ['flink', 'run', '--detached', '-m', 'localhost:8081', '-Dpipeline.jars=file:///j/kafka.jar']
    """
    from streamfolio.flink import job

    command = [binary or flink_binary(), "run"]
    if detached:
        command.append("--detached")
    if target:
        command += ["--target", target]
    if jobmanager:
        command += ["-m", jobmanager]
    if jars:
        command.append("-Dpipeline.jars=" + ";".join(Path(j).resolve().as_uri() for j in jars))
    command += ["--pyFiles", str(WORKER_SITE)]
    command += [
        "-pyexec",
        python,
        "-pyclientexec",
        python,
        "--python",
        str(Path(job.__file__).resolve()),
        *job_args,
    ]
    return command


def job_id_of(output: str) -> str | None:
    """The job id in what ``flink run --detached`` printed, if it says one.

    >>> job_id_of("Job has been submitted with JobID 0123456789abcdef0123456789abcdef\\n")
    '0123456789abcdef0123456789abcdef'
    >>> job_id_of("The program finished with the following exception:") is None
    True
    """
    found = JOB_ID.search(output)
    return found[1] if found else None


def run_submit(
    command: Sequence[str], env: Mapping[str, str], log_file: Path, *, timeout_s: float
) -> str:
    """Run ``command`` (a detached ``flink run``); the job id. Its whole output is appended to
    ``log_file``; a failure raises :class:`ClusterError` with the output's last lines."""
    try:
        done = subprocess.run(
            list(command),
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(
            f"flink run did not finish within {timeout_s:g} s; see {log_file}"
        ) from None
    output = done.stdout + done.stderr
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n{output}\n")
    job_id = job_id_of(output)
    if done.returncode != 0 or job_id is None:
        tail = "\n".join(_telling_lines(output)[-15:])
        raise ClusterError(
            f"flink run failed (exit {done.returncode}); whole output in {log_file}:\n{tail}"
        )
    return job_id


def _telling_lines(output: str) -> list[str]:
    """The output without Java stack frames (``at ...``) and blank lines.

    >>> _telling_lines("Caused by: x\\n\\tat a.B.c(B.java:1)\\n\\n")
    ['Caused by: x']
    """
    return [
        line for line in output.splitlines() if line.strip() and not line.lstrip().startswith("at ")
    ]
