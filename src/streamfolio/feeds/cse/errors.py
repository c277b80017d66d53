"""What goes wrong talking to the exchange's website: :class:`CseSourceError` and its kinds.

Every failure of the CSE client, whether the network, TLS, an HTTP status or an answer it cannot
read, is a :class:`CseSourceError` (a :class:`~streamfolio.errors.SourceError`) whose ``kind``
says which, and whose :attr:`~CseSourceError.permanent` says whether retrying can help.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from streamfolio.errors import SourceError

ErrorKind: TypeAlias = Literal["http", "tls", "timeout", "connection", "payload", "layout"]


class CseSourceError(SourceError):
    """The exchange's website failed, or answered something this client cannot read.

    ``kind`` says which: ``http`` (``status`` set), ``tls``, ``timeout``, ``connection``,
    ``payload`` (not the expected JSON/HTML) or ``layout`` (readable, but a field the client
    needs is gone: the API changed). :attr:`permanent` errors will not go away by retrying.

    >>> error = CseSourceError("https://x/y", "HTTP 404 Not Found", kind="http", status=404)
    >>> str(error), error.permanent
    ('https://x/y: HTTP 404 Not Found', True)
    """

    def __init__(
        self, url: str, problem: str, *, kind: ErrorKind, status: int | None = None
    ) -> None:
        self.url = url
        self.problem = problem
        self.kind: ErrorKind = kind
        self.status = status
        super().__init__(f"{url}: {problem}")

    @property
    def permanent(self) -> bool:
        """Whether retrying later cannot help: TLS, a changed layout, HTTP 3xx/4xx but 408/429."""
        if self.kind in ("tls", "layout"):
            return True
        return (
            self.kind == "http"
            and self.status is not None
            and self.status < 500
            and not retryable_status(self.status)
        )


def retryable_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 5xx, 408 and 429."""
    # 408 Request Timeout and 429 Too Many Requests are the server asking to try again later.
    return status >= 500 or status in (408, 429)
