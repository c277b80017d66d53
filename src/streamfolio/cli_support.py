"""What every ``streamfolio`` command shares: the --config option, progress on stderr, checks of
option values, and the one way a command ends on an error (:func:`command_errors`).

The error story (``streamfolio.errors``): a command body raises only
:class:`~streamfolio.errors.StreamfolioError` subclasses on purpose; :func:`command_errors`
prints ``error: <message>`` on stderr and exits with 2 for a usage error
(:class:`~streamfolio.errors.UsageError`, :class:`~streamfolio.errors.ConfigError`) and 1 for any
other. Anything else (a ``ValueError``...) is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import DefaultPlaceholder

from streamfolio.errors import ConfigError, StreamfolioError, UsageError

if TYPE_CHECKING:
    from streamfolio.config import Settings

__all__ = [
    "ConfigOption",
    "RequiredConfigOption",
    "command_errors",
    "config_option",
    "exit_code",
    "load_settings",
    "one_of",
    "parse_time",
    "plain_flags",
    "say",
]


def config_option(default: str | None, *, help: str | None = None) -> Any:
    """The declaration of ``--config``/``-c`` (also ``$STREAMFOLIO_CONFIG``), for
    ``Annotated[Path | None, config_option(...)]``; ``default`` says what a command reads without
    one (None: it needs one), ``help`` replaces the whole help text."""
    tail = f"Default: {default}." if default else "Required (see examples/cse.yaml)."
    return typer.Option(
        "--config",
        "-c",
        envvar="STREAMFOLIO_CONFIG",
        help=help or f"YAML configuration; also $STREAMFOLIO_CONFIG. {tail}",
        show_default=False,
    )


ConfigOption = Annotated[Path | None, config_option("the packaged examples/cse.yaml")]
"""--config for commands that fall back on the packaged example (see :func:`load_settings`)."""

RequiredConfigOption = Annotated[Path | None, config_option(None)]
"""--config for services that need one (they read it with ``load_config``, which refuses none)."""


def say(line: str) -> None:
    """Progress and status for people: stderr, so stdout stays data. A terminal that is gone
    (closed: EIO after its SIGHUP) does not stop the work the line was about. With
    ``--log-format json`` the line is logged instead (:mod:`streamfolio.observability.logs`)."""
    logs = sys.modules.get("streamfolio.observability.logs")
    if logs is not None and logs.json_logging():
        logging.getLogger(logs.PROGRESS_LOGGER).info(line)
        return
    with contextlib.suppress(OSError, ValueError):  # ValueError: a closed stream
        typer.echo(line, err=True)


def exit_code(error: StreamfolioError) -> int:
    """2 for a usage or configuration error, 1 for any other.

    >>> exit_code(UsageError("--x: bad")), exit_code(StreamfolioError("broker down"))
    (2, 1)
    """
    return 2 if isinstance(error, UsageError | ConfigError) else 1


@contextlib.contextmanager
def command_errors(*, interrupted: int | None = None) -> Iterator[None]:
    """Run a command body: a :class:`StreamfolioError` prints ``error: <message>`` on stderr and
    exits with :func:`exit_code`; with ``interrupted``, Ctrl-C exits with that code quietly.
    A component whose Kafka credentials were refused (it stopped itself: see
    :mod:`streamfolio.kafka.outage`) exits as on a configuration error."""
    try:
        yield
    except StreamfolioError as error:
        _exit_if_refused()  # whatever failed next, the refusal is the cause to report
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(exit_code(error)) from None
    except KeyboardInterrupt:
        _exit_if_refused()
        if interrupted is None:
            raise
        raise typer.Exit(interrupted) from None
    _exit_if_refused()


def _exit_if_refused() -> None:
    outage = sys.modules.get("streamfolio.kafka.outage")
    watch = getattr(outage, "_watch", None)
    if watch is not None and watch.refused is not None:
        error = ConfigError(
            "kafka.security",
            f"Kafka refused the credentials ({watch.refused})",
            "check the username and password (or password_file) of this component's principal",
        )
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(exit_code(error))


def load_settings(config: Path | None) -> Settings:
    """The configuration at ``config``, or the packaged example when none is given."""
    from streamfolio.config import example_config_path, load_config

    return load_config(config if config is not None else example_config_path())


def one_of(value: str, allowed: tuple[str, ...], option: str) -> str:
    """``value`` if it is one of ``allowed``, else a :class:`UsageError` naming ``option``.

    >>> one_of("gif", ("png", "svg"), "--image-format")
    Traceback (most recent call last):
    ...
    streamfolio.errors.UsageError: --image-format must be png or svg, not 'gif'
    """
    if value not in allowed:
        choices = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
        raise UsageError(f"{option} must be {choices}, not {value!r}")
    return value


def parse_time(text: str, option: str) -> dt.datetime:
    """An ISO-8601 time or date (``Z`` for UTC), else a :class:`UsageError` naming ``option``.

    >>> parse_time("2026-10-01T09:30Z", "--start").isoformat()
    '2026-10-01T09:30:00+00:00'
    >>> parse_time("yesterday", "--start")
    Traceback (most recent call last):
    ...
    streamfolio.errors.UsageError: --start: 'yesterday' is not an ISO-8601 time (fix: write it \
like 2026-10-01 or 2026-10-01T09:30:00Z)
    """
    try:
        return dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option}: {text!r} is not an ISO-8601 time "
            "(fix: write it like 2026-10-01 or 2026-10-01T09:30:00Z)"
        ) from None


# --------------------------------------------------------------------------- help rendering


def _no_flag_types(params: list[Any]) -> None:
    # typer's rich help prints a `<bool>` type next to every flag (--help included), although a
    # flag takes no value; an empty metavar leaves that column blank. Plain help already does.
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class Command(TyperCommand):
    """A typer command whose help shows no ``<bool>`` next to its flags."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _no_flag_types(self.get_params(ctx))
        super().format_help(ctx, formatter)


class Group(TyperGroup):
    """A typer group whose help shows no ``<bool>`` next to its flags."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _no_flag_types(self.get_params(ctx))
        super().format_help(ctx, formatter)


def plain_flags(app: typer.Typer) -> None:
    """Make ``app``, its commands and its sub-apps (recursively) use :class:`Command` and
    :class:`Group` unless they chose a class of their own. Call it once every command is added."""
    if app.info.cls is None or isinstance(app.info.cls, DefaultPlaceholder):
        app.info.cls = Group
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand) or isinstance(command.cls, DefaultPlaceholder):
            command.cls = Command
    for group in app.registered_groups:
        if group.typer_instance is not None:
            plain_flags(group.typer_instance)


STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP)
"""Besides Ctrl-C's SIGINT, the signals that stop a long-running command as Ctrl-C does:
``kill`` and a closed terminal."""


class StopRequested(KeyboardInterrupt):
    """Raised in the main thread by a stop signal (SIGTERM, SIGHUP), as SIGINT raises
    :class:`KeyboardInterrupt`: whatever the command is doing unwinds to its ordered shutdown."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


@contextlib.contextmanager
def stop_signals(signals: Sequence[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`StopRequested`; the previous handlers are
    restored afterwards. Outside the main thread (where Python runs no handlers) it does nothing.

    >>> before = signal.getsignal(signal.SIGTERM)
    >>> with stop_signals():
    ...     signal.getsignal(signal.SIGTERM) is not before
    True
    >>> signal.getsignal(signal.SIGTERM) is before
    True
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, _frame: object) -> None:
        raise StopRequested(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def configure_logging(level: int = logging.WARNING) -> None:
    """Log lines (the broker watch's outage lines, librdkafka's warnings) to stderr with time,
    level and logger, at ``level``; a handler an embedding application set up is left alone."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=level,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
