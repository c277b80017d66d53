"""The Maven cache (filled once, atomically, stamped) and the Maven runner, without Maven."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streamfolio.devtools import ToolError
from streamfolio.devtools.maven import cached_folder, find_mvn, is_complete, run_maven


def test_a_cache_is_filled_once_and_again_only_for_another_stamp(tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    fills: list[Path] = []

    def fill(into: Path) -> None:
        assert into != folder and into.is_dir() and not any(into.iterdir())
        fills.append(into)
        (into / f"a-{len(fills)}.jar").write_text("jar")

    assert cached_folder(folder, "v1", fill) == folder
    assert cached_folder(folder, "v1", fill) == folder
    assert len(fills) == 1 and is_complete(folder, "v1") and not is_complete(folder, "v2")
    cached_folder(folder, "v2", fill)
    assert len(fills) == 2
    assert sorted(p.name for p in folder.iterdir()) == [".complete", "a-2.jar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lib.lock", "lib"]


def test_a_failed_fill_leaves_the_cache_as_it_was(tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    cached_folder(folder, "v1", lambda into: (into / "old.jar").write_text("jar"))

    def broken(into: Path) -> None:
        (into / "half.jar").write_text("ja")
        raise ToolError("network down")

    with pytest.raises(ToolError, match="network down"):
        cached_folder(folder, "v2", broken)
    assert sorted(p.name for p in folder.iterdir()) == [".complete", "old.jar"]
    assert is_complete(folder, "v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lib.lock", "lib"]


def _fake_mvn(folder: Path, script: str) -> Path:
    mvn = folder / "mvn"
    mvn.write_text(f"#!/bin/sh\n{script}\n")
    mvn.chmod(mvn.stat().st_mode | stat.S_IEXEC)
    return mvn


def test_find_mvn_says_how_to_get_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match=r"once, to fetch jars; .*apt-get install maven.*or X"):
        find_mvn("fetch jars", "X")
    _fake_mvn(tmp_path, "exit 0")
    assert find_mvn("fetch jars", "X") == str(tmp_path / "mvn")


def test_run_maven_quotes_the_command_and_the_end_of_its_output(tmp_path: Path) -> None:
    failing = _fake_mvn(tmp_path, 'for i in $(seq 1 50); do echo "line $i"; done; exit 3')
    with pytest.raises(ToolError) as caught:
        run_maven(str(failing), tmp_path / "pom.xml", "package", what="building x", hint="why")
    text = str(caught.value)
    assert text.startswith("Maven failed building x (exit 3; why):\n$ ")
    assert f"-q -f {tmp_path / 'pom.xml'} package" in text
    assert "line 50" in text and "line 20" not in text


def test_run_maven_fails_when_the_expected_file_is_missing(tmp_path: Path) -> None:
    quiet = _fake_mvn(tmp_path, 'echo "$@"')
    wanted = tmp_path / "out.jar"
    with pytest.raises(ToolError, match=r"exit 0; .*out\.jar was not written"):
        run_maven(str(quiet), tmp_path / "pom.xml", what="building", produces=wanted)
    wanted.write_text("jar")
    output = run_maven(str(quiet), tmp_path / "pom.xml", "-Dx=1", what="b", produces=wanted)
    assert output.split() == ["-q", "-f", str(tmp_path / "pom.xml"), "-Dx=1"]
