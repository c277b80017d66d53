"""The unsent-messages file: what a feed stopped during an outage keeps for its next run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamfolio.errors import DataError
from streamfolio.kafka.unsent import FORMAT, VERSION, UnsentFile, UnsentFileError, UnsentMessage


def messages(count: int, start: int = 0) -> list[UnsentMessage]:
    """Ticks and heartbeats with every kind of field: keyed or not, partitioned or not, any
    bytes (not UTF-8), a timestamp or none."""
    out = []
    for i in range(start, start + count):
        if i % 3 == 0:
            out.append(UnsentMessage("prices", i % 4, None, b"\x00\xff hb %d" % i, 1000 + i))
        else:
            out.append(UnsentMessage("prices", None, b"IAM", bytes([i % 256, 0x80]), 1000 + i))
    out.append(UnsentMessage("deadLetters", None, b"", b"", None))
    return out


def test_round_trip_keeps_every_field_and_the_order(tmp_path: Path) -> None:
    spool = UnsentFile(tmp_path / "feed" / "prices.streamfolio.unsent.jsonl")
    first, second = messages(50), messages(30, start=50)
    assert spool.append(first) == len(first)
    assert spool.append([]) == 0
    assert spool.append(second) == len(second)
    assert spool.read() == first + second
    lines = spool.path.read_bytes().splitlines()
    assert json.loads(lines[0]) == {"format": FORMAT, "version": VERSION}
    assert len(lines) == 1 + len(first) + len(second), "one header, one line a message"


def test_no_file_and_an_empty_file_hold_nothing(tmp_path: Path) -> None:
    spool = UnsentFile(tmp_path / "none.jsonl")
    assert spool.read() == [] and not spool.exists()
    spool.path.write_bytes(b"")
    assert spool.read() == []
    spool.remove()
    spool.remove()  # already gone: no error
    assert not spool.exists()


def test_a_truncated_last_line_is_skipped_then_dropped_by_the_next_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = UnsentFile(tmp_path / "spool.jsonl")
    kept = messages(5)
    spool.append(kept)
    lost = UnsentMessage("prices", 1, b"BCP", b"cut short", 5).to_line()
    with open(spool.path, "ab") as file:
        file.write(lost[: len(lost) // 2])  # the process killed in the middle of a write
    assert spool.read() == kept
    assert "skipped a truncated last line" in caplog.text
    later = messages(2, start=100)
    spool.append(later)
    assert "dropped a truncated last line" in caplog.text
    assert spool.read() == kept + later


def test_a_truncated_header_is_an_empty_file(tmp_path: Path) -> None:
    spool = UnsentFile(tmp_path / "spool.jsonl")
    spool.path.write_bytes(b'{"format": "streamf')
    assert spool.read() == []
    spool.append(messages(1))
    assert spool.read() == messages(1)


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (b'{"format": "other"}\n', 1, "not a streamfolio-unsent header"),
        (b"time,ticker,price\n", 1, "not a streamfolio-unsent header"),
        (b'{"format": "streamfolio-unsent", "version": 2}\n', 1, "version 2"),
        (None, 3, "not a message"),
    ],
)
def test_a_corrupt_file_names_itself_the_line_and_the_fix(
    tmp_path: Path, content: bytes | None, line: int, problem: str
) -> None:
    spool = UnsentFile(tmp_path / "spool.jsonl")
    if content is None:
        spool.append(messages(3))
        lines = spool.path.read_bytes().splitlines(keepends=True)
        lines[2] = b'["prices", null, "%%%", "", null]\n'
        spool.path.write_bytes(b"".join(lines))
    else:
        spool.path.write_bytes(content)
    with pytest.raises(UnsentFileError) as caught:
        spool.read()
    text = str(caught.value)
    assert text.startswith(f"{spool.path}: line {line}: ")
    assert problem in text and "fix: repair or move the file away" in text
    assert isinstance(caught.value, DataError), "exits 1, as a malformed file does"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"topic": "t"}, "not an array"),
        (["t", 0, None, ""], "not an array"),
        ([1, 0, None, "", None], "the topic is 1, not a str"),
        (["t", "0", None, "", None], "the partition is '0', not an int or null"),
        (["t", True, None, "", None], "the partition is True"),
        (["t", 0, None, None, None], "the value is None, not a str"),
        (["t", 0, None, "", 1.5], "the timestamp is 1.5"),
        (["t", 0, "a", "", None], "the key or the value is not base64"),
    ],
)
def test_each_field_is_checked(fields: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        UnsentMessage.from_line(json.dumps(fields).encode())


def test_a_line_is_plain_json_whatever_the_topic_and_bytes() -> None:
    message = UnsentMessage("prix-ç", 7, b"\xff\x00", b"", -1)
    line = message.to_line()
    assert line.isascii() and line.endswith(b"\n")
    assert json.loads(line) == ["prix-ç", 7, "/wA=", "", -1]
    assert UnsentMessage.from_line(line) == message
