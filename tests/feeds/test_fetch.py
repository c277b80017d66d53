"""`streamfolio fetch-history`'s work, against recorded exchange responses (no network)."""

from __future__ import annotations

from pathlib import Path

import httpx

from streamfolio.feeds import cse
from streamfolio.feeds.cse import CseClient
from streamfolio.feeds.fetch import fetch_history
from streamfolio.feeds.history import read_history

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cse"


def test_fetched_history_is_readable_by_init(tmp_path: Path) -> None:
    served: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        # The newest window gets the recorded month, older windows are empty: history ends.
        if request.url.path == cse.GEN2_INDEX_HISTORY_PATH:
            return httpx.Response(
                200, content=(FIXTURES / "indices-historical_MASI.json").read_bytes()
            )
        if request.url.params.get("instrument") == "ATW" and not served:
            served.append("ATW")
            body = (FIXTURES / "stock-historical_ATW_2026-09-08_2026-10-08.json").read_bytes()
            return httpx.Response(200, content=body)
        return httpx.Response(200, content=(FIXTURES / "stock-historical_empty.json").read_bytes())

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        client = CseClient(http, sleep=lambda _: None, clock=lambda: 1_791_500_000.0)
        fetched = fetch_history(client, ["ATW"], tmp_path / "h.csv", tmp_path / "masi.csv")
    assert fetched.per_ticker["ATW"] > 15
    history = read_history(tmp_path / "h.csv", known_tickers={"ATW"})
    assert len(history) == fetched.history_rows
    assert list(history.times_ms) == sorted(history.times_ms)
    index = read_history(tmp_path / "masi.csv")
    assert set(index.tickers.tolist()) == {"MASI"} and len(index) == fetched.index_rows > 0
