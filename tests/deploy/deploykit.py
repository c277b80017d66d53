"""What the deploy/ tests read: the manifests, the configuration they mount, the pods that run the
project's image, the Dockerfile's instructions, and the pins of pyproject.toml."""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streamfolio.config import Settings, settings_from_mapping

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
CONFIG_PATH = Path("/etc/streamfolio/config.yaml")
"""Where every pod mounts the configuration (key ``config.yaml`` of the ConfigMap)."""
CONFIG_MAP = "streamfolio-config"


@dataclass(frozen=True)
class Manifest:
    """One YAML document of deploy/, with the file it comes from."""

    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}: {self.kind} {self.name}"


@dataclass(frozen=True)
class Pod:
    """A pod template that runs the project's image, and the component it runs as."""

    owner: Manifest
    component: str
    spec: dict[str, Any]
    role: str = ""
    """``jobManager`` or ``taskManager`` in a FlinkDeployment."""

    def __str__(self) -> str:
        return f"{self.owner.name}{'.' + self.role if self.role else ''}"

    @property
    def container(self) -> dict[str, Any]:
        """The main container (the Flink operator's is named ``flink-main-container``)."""
        (first, *_) = self.spec["containers"]
        return first  # type: ignore[no-any-return]

    def mounts(self) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """Mount path → (the volume mount, the volume it mounts)."""
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        return {
            m["mountPath"]: (m, volumes[m["name"]]) for m in self.container.get("volumeMounts", [])
        }


@functools.cache
def manifests() -> tuple[Manifest, ...]:
    """Every YAML document under deploy/kubernetes (empty ones skipped; deploy/grafana's are
    Grafana's and Prometheus' files, tests/deploy/test_grafana.py)."""
    found = []
    for path in sorted([*KUBERNETES.rglob("*.yaml"), *KUBERNETES.rglob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                found.append(Manifest(path, doc))
    return tuple(found)


def of_kind(kind: str) -> list[Manifest]:
    return [m for m in manifests() if m.kind == kind]


def one(kind: str, name: str | None = None) -> Manifest:
    """The manifest of ``kind`` (named ``name``); fails unless there is exactly one."""
    (found,) = [m for m in of_kind(kind) if name is None or m.name == name]
    return found


def config_text() -> str:
    """The configuration file the ConfigMap holds."""
    return str(one("ConfigMap", CONFIG_MAP).doc["data"][CONFIG_PATH.name])


def settings() -> Settings:
    """The ConfigMap's configuration as streamfolio loads it (no environment overrides)."""
    raw = yaml.safe_load(config_text())
    return settings_from_mapping(raw, environ={}, base_dir=CONFIG_PATH.parent)


def pods() -> Iterator[Pod]:
    """Every pod template of deploy/: Deployments, Jobs, and the FlinkDeployment's JobManager and
    TaskManagers; each labelled with its component (``app.kubernetes.io/component``)."""
    for m in manifests():
        component = m.doc["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")
        if m.kind in ("Deployment", "Job"):
            yield Pod(m, component, m.doc["spec"]["template"]["spec"])
        elif m.kind == "FlinkDeployment":
            for role in ("jobManager", "taskManager"):
                yield Pod(m, component, m.doc["spec"][role]["podTemplate"]["spec"], role)


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def pinned(requirements: list[str], name: str) -> str:
    """The version ``name`` is pinned to (``name==X``) in ``requirements``.

    >>> pinned(["numpy>=1", "apache-flink==2.2.1"], "apache-flink")
    '2.2.1'
    """
    (version,) = [r.split("==", 1)[1] for r in requirements if r.startswith(f"{name}==")]
    return version


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case) and the rest of its line(s)."""

    keyword: str
    text: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped.

    >>> [i.keyword for i in _parse("FROM a AS b\\n# c\\nRUN x \\\\\\n    && y\\nUSER z\\n")]
    ['FROM', 'RUN', 'USER']
    """
    return _parse(DOCKERFILE.read_text(encoding="utf-8"))


def _parse(text: str) -> list[Instruction]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append(Instruction(keyword.upper(), rest.strip()))
    return found


def build_args() -> dict[str, str]:
    """The default of every ``ARG NAME=value`` of the Dockerfile."""
    found = {}
    for instruction in dockerfile():
        if instruction.keyword == "ARG" and "=" in instruction.text:
            name, value = instruction.text.split("=", 1)
            found[name] = value
    return found


def final_stage() -> list[Instruction]:
    """The instructions of the Dockerfile's last stage (the image), from its ``FROM`` on."""
    instructions = dockerfile()
    start = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    return instructions[start:]


def image_env() -> dict[str, str]:
    """The image's ``ENV`` values (``KEY=value`` form; quotes removed, no expansion)."""
    found = {}
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', instruction.text):
                found[name] = value.strip('"')
    return found
