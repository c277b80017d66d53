"""Owner notifications: real apprise deliveries to a webhook on localhost, and failures that
must never reach the service."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from streamfolio.config import PortfolioSettings
from streamfolio.messages import RebalanceEvent
from streamfolio.rebalancer.notify import Notification, Notifier, notification_for

T0 = 1_790_845_200_000


@dataclass
class Webhook:
    """A local HTTP endpoint that records the JSON bodies POSTed to it."""

    port: int
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/hooks/streamfolio") -> str:
        return f"json://localhost:{self.port}{path}"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            hook.bodies.append(json.loads(self.rfile.read(length)))
            hook.paths.append(self.path)
            self.send_response(200)
            self.end_headers()
            hook.received.set()

        def log_message(self, *_: Any) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


def portfolio(*urls: str) -> PortfolioSettings:
    return PortfolioSettings(
        id="banks",
        owner="ana",
        tickers=["ATW", "BCP", "BOA"],
        notify=list(urls),
        policy={"sharpe_threshold": 0.3},
    )


def rebalance_event() -> RebalanceEvent:
    return RebalanceEvent(
        "banks",
        T0,
        "sharpe 0.12 below threshold 0.30",
        "rebalance",
        {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2},
        {"ATW": 0.6215, "BCP": 0.2785, "BOA": 0.1},
        0.12,
        0.58,
        0.081,
        0.14,
        0.1215,
        "optimal",
    )


def hold_event() -> RebalanceEvent:
    return RebalanceEvent(
        "banks",
        T0,
        "best expected gain 0.010 is below the minimum 0.050",
        "hold",
        {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2},
        {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2},
        0.12,
        0.12,
        0.05,
        0.2,
        0.0,
        "",
    )


def test_a_rebalance_reaches_the_owners_webhook(webhook: Webhook) -> None:
    notifier = Notifier()
    notifier.submit(notification_for(rebalance_event(), portfolio(webhook.url())))
    notifier.close(timeout=20)

    assert notifier.sent == 1 and notifier.failed == 0
    assert webhook.paths == ["/hooks/streamfolio"]
    (body,) = webhook.bodies
    text = body["title"] + "\n" + body["message"]
    assert "banks" in text
    assert "sharpe 0.12 below threshold 0.30" in text
    assert "New weights: ATW 62.15 %, BCP 27.85 %, BOA 10.00 %" in text
    assert "Old weights: ATW 50.00 %, BCP 30.00 %, BOA 20.00 %" in text
    assert "0.12 -> 0.58" in text and "Hello ana" in text
    assert body["type"] == "info"


def test_a_hold_below_threshold_is_a_warning(webhook: Webhook) -> None:
    notifier = Notifier()
    notifier.submit(notification_for(hold_event(), portfolio(webhook.url("/h"))))
    notifier.close(timeout=20)
    (body,) = webhook.bodies
    assert body["type"] == "warning"
    assert "below its threshold 0.30" in body["message"]
    assert "best expected gain 0.010 is below the minimum 0.050" in body["message"]
    assert "Current weights: ATW 50.00 %, BCP 30.00 %, BOA 20.00 %" in body["message"]


def test_every_url_of_the_portfolio_is_notified(webhook: Webhook) -> None:
    notifier = Notifier()
    note = notification_for(rebalance_event(), portfolio(webhook.url("/a"), webhook.url("/b")))
    notifier.submit(note)
    notifier.close(timeout=20)
    assert sorted(webhook.paths) == ["/a", "/b"] and notifier.sent == 1


def test_an_unreachable_endpoint_is_logged_and_counted_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = Notifier()
    with caplog.at_level(logging.WARNING, logger="streamfolio.rebalancer.notify"):
        notifier.submit(
            notification_for(rebalance_event(), portfolio(f"json://localhost:{closed_port()}/x"))
        )
        notifier.close(timeout=30)
    assert notifier.failed == 1 and notifier.sent == 0
    assert "could not notify the owner of banks (json://localhost:" in caplog.text
    assert "/x" not in caplog.text, "logs show scheme and host only"


def test_a_url_apprise_cannot_use_fails_without_revealing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = Notifier()
    secret = "nosuchservice://user:s3cret@example.com"
    with caplog.at_level(logging.WARNING):
        notifier.submit(notification_for(rebalance_event(), portfolio(secret)))
        notifier.close(timeout=20)
    assert notifier.failed == 1
    assert "not usable by apprise" in caplog.text
    assert "s3cret" not in caplog.text, "URLs carry credentials: logs show them masked"
    assert "nosuchservice://***" in caplog.text


def test_a_sender_that_raises_is_counted_as_a_failure() -> None:
    def explode(_: Notification) -> bool:
        raise RuntimeError("smtp server on fire")

    notifier = Notifier(send=explode)
    notifier.submit(notification_for(rebalance_event(), portfolio("json://localhost:9/x")))
    notifier.submit(notification_for(hold_event(), portfolio("json://localhost:9/x")))
    notifier.close(timeout=5)
    assert notifier.failed == 2 and notifier.sent == 0


def test_without_urls_a_log_line_says_what_happened(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[Notification] = []

    def record(note: Notification) -> bool:
        sent.append(note)
        return True

    notifier = Notifier(send=record)
    with caplog.at_level(logging.INFO, logger="streamfolio.rebalancer.notify"):
        notifier.submit(notification_for(rebalance_event(), portfolio()))
        notifier.close()
    assert notifier.logged == 1 and not sent
    assert "banks rebalanced" in caplog.text and "no notification URL" in caplog.text


def test_notifications_go_out_in_order_after_close_waits_for_them() -> None:
    delivered: list[str] = []
    gate = threading.Event()

    def slow(note: Notification) -> bool:
        gate.wait(5)
        delivered.append(note.kind)
        return True

    notifier = Notifier(send=slow)
    notifier.submit(notification_for(rebalance_event(), portfolio("json://h/x")))
    notifier.submit(notification_for(hold_event(), portfolio("json://h/x")))
    assert delivered == [], "submit never waits for a delivery"
    gate.set()
    notifier.close(timeout=10)
    assert delivered == ["rebalance", "hold"]
