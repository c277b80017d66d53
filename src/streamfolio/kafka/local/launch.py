"""Starting the JVMs of a local cluster's nodes: formatting their storage, starting them
detached, checking their ports, and the error that shows a node's last log lines.

:class:`NodeLauncher` runs Java with the cached Kafka jars, like the single broker of
:mod:`~streamfolio.kafka.local.broker`; processes are then found and stopped with
:mod:`~streamfolio.kafka.local.processes`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streamfolio.devtools.files import tail, tail_lines
from streamfolio.kafka.local.install import LOG4J_CONFIG, LocalKafkaError
from streamfolio.kafka.local.nodes import Node
from streamfolio.kafka.local.processes import MAIN_CLASS, bindable, listening, start_detached

__all__ = ["CLUSTER_HEAP", "NodeLauncher", "check_ports", "node_failure"]

CLUSTER_HEAP = ("-Xms128m", "-Xmx384m", "-XX:+UseSerialGC")
"""Per node. Measured: a node of a 3-node SASL_SSL cluster holds about 360 MB resident after
start, so three fit beside a Flink cluster; the serial collector spares the 2 cores."""
_STORAGE_TOOL = "kafka.tools.StorageTool"


def check_ports(node: Node) -> None:
    """Raise :class:`LocalKafkaError` if one of ``node``'s ports is taken by another process."""
    for key, port in (
        ("port", node.client_port),
        ("internal_port", node.internal_port),
        ("controller_port", node.controller_port),
    ):
        if listening(port) or not bindable(port):
            raise LocalKafkaError(
                f"localhost:{port} (kafka.local.{key} + {node.index}, node {node.index}) is in "
                f"use by another process; stop it or move kafka.local.{key}"
            )


def node_failure(node: Node, what: str) -> LocalKafkaError:
    """``what`` with the last lines of ``node``'s JVM output and log."""
    tails = [
        f"--- {path} (last lines)\n{tail(path)}"
        for path in (node.out_file, node.log_file)
        if tail(path).strip()
    ]
    return LocalKafkaError("\n".join([what, *tails]))


@dataclass(frozen=True)
class NodeLauncher:
    """Runs ``java`` with the jars in ``lib_dir``, logging as the checkout at ``root`` says."""

    java: str
    root: Path
    lib_dir: Path

    def command(self, node: Node, main: str, *args: str, heap: Sequence[str]) -> list[str]:
        """The command line that runs ``main`` for ``node`` (its logs in its folder)."""
        return [
            self.java,
            *heap,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.root / LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={node.folder}",
            "-cp",
            f"{self.lib_dir}/*",  # expanded by the java launcher, not a shell
            main,
            *args,
        ]

    def format(self, nodes: Sequence[Node], cluster_id: str, extra: Sequence[str] = ()) -> None:
        """Format the storage of ``nodes`` (in parallel) for cluster ``cluster_id``; ``extra``
        arguments (``--add-scram …``) go to every node alike."""
        runs = [
            subprocess.Popen(
                self.command(
                    node,
                    _STORAGE_TOOL,
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(node.properties_file),
                    "--ignore-formatted",
                    *extra,
                    heap=("-Xmx128m",),
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for node in nodes
        ]
        for node, run in zip(nodes, runs, strict=True):
            try:
                output, _ = run.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                run.kill()
                raise LocalKafkaError(f"formatting node {node.index} took over 5 minutes") from None
            if run.returncode != 0:
                raise LocalKafkaError(
                    f"formatting node {node.index} in {node.log_dirs} failed (exit "
                    f"{run.returncode}); delete {node.folder.parent} to start over:\n"
                    f"{tail_lines(output)}"
                )

    def start(self, node: Node) -> int:
        """Start ``node``'s broker detached (it outlives the caller); its pid, also written to
        its pid file."""
        command = self.command(node, MAIN_CLASS, str(node.properties_file), heap=CLUSTER_HEAP)
        node.out_file.write_text(f"# {' '.join(command)}\n", encoding="utf-8")
        pid = start_detached(command, node.out_file)
        node.pid_file.write_text(f"{pid}\n", encoding="utf-8")
        return pid
