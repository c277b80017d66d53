"""Settings: one frozen, validated object per process, loaded from a YAML file.

Every default lives here. :func:`load_config` reads the file named by its argument, else by the
environment variable ``STREAMFOLIO_CONFIG``; ``examples/cse.yaml`` documents every key and
``examples/minimal.yaml`` is the smallest valid file. Any problem (a missing file, a YAML syntax
error, an unknown key, a bad value) raises :class:`~streamfolio.errors.ConfigError` naming the key
as a dotted path, portfolios by id (``portfolios[banks].weights``), and saying how to fix it.

Environment overrides, for hosts and secrets that do not belong in a committed file: a variable
``STREAMFOLIO_<SECTION>__<KEY>[__<KEY>…]`` sets that key, case-insensitively, over the file. The
value is read as YAML, so ``STREAMFOLIO_FLINK__PARALLELISM=4`` is a number. Under
``kafka.security`` the value is always a string and ``_`` in the key stands for ``.``, so
``STREAMFOLIO_KAFKA__SECURITY__SASL_PASSWORD`` sets the librdkafka property ``sasl.password``.
Portfolios cannot be set this way.

Secrets: ``kafka.security`` values and notification URLs (``notify``) are kept as secrets, shown
masked in reprs, dumps and error messages (``SecretStr('**********')``,
``SecretURL('https://hooks.slack.com/***')``). A ``notify`` entry ``env:NAME`` is read from the
environment variable ``NAME`` and ``file:PATH`` from a file (relative to the configuration file's
folder), when the configuration loads; ``STREAMFOLIO_DEFAULTS__NOTIFY`` sets every portfolio's.

>>> settings = load_config(example_config_path(), environ={})
>>> settings.portfolio("banks").tickers
('ATW', 'BCP', 'BOA')
>>> settings.kafka.bootstrap_servers, settings.topics.prices
('localhost:9092', 'intraday-stock-prices')
>>> load_config(example_config_path(), environ={"STREAMFOLIO_KAFKA__BOOTSTRAP_SERVERS": "k:9092"}
...             ).kafka.bootstrap_servers
'k:9092'
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import math
import os
import re
import typing
import urllib.parse
import warnings
from collections.abc import Hashable, Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from streamfolio.core.calendar import (
    CSE,
    DAY_SECONDS,
    ExchangeCalendar,
    parse_hhmm,
    periods_per_year,
)
from streamfolio.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "WEIGHT_TOLERANCE",
    "BlackLittermanSettings",
    "BoundsSettings",
    "EstimatorSettings",
    "ExchangeSettings",
    "FeedSettings",
    "FlinkSettings",
    "KafkaSettings",
    "LocalKafkaSettings",
    "PortfolioDefaults",
    "PortfolioSettings",
    "RebalancePolicySettings",
    "RebalancerSettings",
    "SecretURL",
    "Settings",
    "TopicSettings",
    "ValidationSettings",
    "ViewSettings",
    "example_config_path",
    "load_config",
    "mask_url",
    "settings_from_mapping",
]

CONFIG_ENV = "STREAMFOLIO_CONFIG"
_ENV_PREFIX = "STREAMFOLIO_"
_EXAMPLE = "examples/cse.yaml"
WEIGHT_TOLERANCE = 1e-6
"""Weights must sum to 1 within this (``SEMANTICS.md`` §6)."""

_TICKER = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,11}")
_PORTFOLIO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
_TOPIC = re.compile(r"[A-Za-z0-9._\-]{1,249}")

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


def _problem(message: str, fix: str, subkey: str = "") -> PydanticCustomError:
    # The fix and the sub-path ride in the error's context; _config_error reads them back.
    return PydanticCustomError("streamfolio", message, {"fix": fix, "subkey": subkey})


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# --------------------------------------------------------------------------------------- sections


class ExchangeSettings(_Model):
    """The exchange: clock, session hours, and holidays beyond the built-in list.

    ``name: CSE`` uses the built-in Casablanca holidays (``core.calendar.CSE``); any other name
    starts from none. Ramadan hours (e.g. ``"10:00"`` to ``"13:30"``) are set here for the month.
    """

    name: str = "CSE"
    timezone: str = "Africa/Casablanca"
    session_open: str = "09:30"
    session_close: str = "15:30"
    trading_days_per_year: Annotated[float, Field(gt=0, le=366)] = 246.0
    extra_holidays: tuple[dt.date, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise _problem(
                f"unknown time zone {value!r}", "an IANA name such as Africa/Casablanca"
            ) from None
        return value

    @field_validator("session_open", "session_close", mode="before")
    @classmethod
    def _hhmm(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 10:00 as the base-60 number 600.
            raise _problem(f"YAML read this time as the number {value}", 'quote it: "10:00"')
        if isinstance(value, str):
            try:
                parse_hhmm(value)
            except ValueError as exc:
                raise _problem(str(exc), 'write local time as "HH:MM", e.g. "09:30"') from None
        return value

    @model_validator(mode="after")
    def _open_before_close(self) -> ExchangeSettings:
        if parse_hhmm(self.session_open) >= parse_hhmm(self.session_close):
            raise _problem(
                f"session_open {self.session_open} is not before session_close "
                f"{self.session_close}",
                "the session runs from session_open to session_close, same day",
                "session_close",
            )
        return self

    def calendar(self) -> ExchangeCalendar:
        """The :class:`~streamfolio.core.calendar.ExchangeCalendar` these settings describe.

        >>> ExchangeSettings(extra_holidays=["2026-11-20"]).calendar().holidays - CSE.holidays
        frozenset({datetime.date(2026, 11, 20)})
        """
        base = CSE if self.name == "CSE" else ExchangeCalendar(name=self.name)
        return ExchangeCalendar(
            name=self.name,
            timezone=self.timezone,
            session_open=parse_hhmm(self.session_open),
            session_close=parse_hhmm(self.session_close),
            weekend=base.weekend,
            holidays=base.holidays | frozenset(self.extra_holidays),
            annual_holidays=base.annual_holidays,
            trading_days_per_year=self.trading_days_per_year,
        )


class LocalKafkaSettings(_Model):
    """The single-node KRaft broker the project's tooling starts for development and tests."""

    port: Annotated[int, Field(ge=1, le=65535)] = 9092
    controller_port: Annotated[int, Field(ge=1, le=65535)] = 9093
    kafka_version: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+$")] = "4.1.1"
    data_dir: Path = Path(".cache/kafka")


class KafkaSettings(_Model):
    """How to reach Kafka. ``security`` holds extra librdkafka properties (SASL, TLS); they are
    kept as secrets (masked in dumps and reprs), so set them from the environment, not the file."""

    bootstrap_servers: Annotated[str, Field(min_length=1)] = "localhost:9092"
    partitions: Annotated[int, Field(ge=1)] = 3
    replication_factor: Annotated[int, Field(ge=1)] = 1
    client_id: Annotated[str, Field(min_length=1)] = "streamfolio"
    security: dict[str, SecretStr] = Field(default_factory=dict)
    local: LocalKafkaSettings = LocalKafkaSettings()

    @field_validator("security")
    @classmethod
    def _no_shadowing(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for key in ("bootstrap.servers", "client.id"):
            if key in value:
                raise _problem(
                    f"{key!r} belongs in kafka.{key.replace('.', '_')}",
                    "move it out of kafka.security",
                    key,
                )
        return value

    def client_config(self) -> dict[str, str]:
        """librdkafka properties for a producer, consumer or admin client, secrets revealed.

        >>> KafkaSettings(security={"security.protocol": "SASL_SSL"}).client_config()
        {'bootstrap.servers': 'localhost:9092', 'client.id': 'streamfolio', \
'security.protocol': 'SASL_SSL'}
        """
        config = {"bootstrap.servers": self.bootstrap_servers, "client.id": self.client_id}
        config.update({k: v.get_secret_value() for k, v in self.security.items()})
        return config


class TopicSettings(_Model):
    """Kafka topic names. The defaults are the reference project's, for wire compatibility."""

    prices: str = "intraday-stock-prices"
    initial_stats: str = "portfStats"
    weights: str = "Weights"
    updated_stats: str = "portfUpdatedStats"
    metrics: str = "portfMetrics"
    rebalance_events: str = "rebalanceEvents"
    dead_letter: str = "deadLetters"

    @field_validator("*")
    @classmethod
    def _legal_name(cls, value: str) -> str:
        if not _TOPIC.fullmatch(value) or value in {".", ".."}:
            raise _problem(
                f"{value!r} is not a legal Kafka topic name",
                "use up to 249 letters, digits, '.', '_' or '-'",
            )
        return value

    @model_validator(mode="after")
    def _distinct(self) -> TopicSettings:
        seen: dict[str, str] = {}
        for role, name in self.model_dump().items():
            if name in seen:
                raise _problem(
                    f"topic {name!r} is used both for {seen[name]} and for {role}",
                    "give every role its own topic",
                    role,
                )
            seen[name] = role
        return self


class FlinkSettings(_Model):
    """The streaming job: event time, checkpoints and delivery guarantees."""

    parallelism: Annotated[int, Field(ge=1)] = 1
    max_out_of_orderness_ms: Annotated[int, Field(ge=0)] = 2000
    idleness_ms: Annotated[int, Field(ge=0)] = 0
    """Ignored (the job logs a warning when it is set): watermarks come from the data alone,
    and a quiet partition is moved by heartbeats. Processing-time idleness let Flink's windows
    drop ticks nobody had judged late; producers without heartbeats run next to
    ``streamfolio feed --source heartbeats`` instead (docs/flink.md). Kept so that existing
    configurations load."""
    control_idleness_ms: Annotated[int, Field(ge=1)] = 5000
    """How long a control-topic reader with nothing (more) to read holds the portfolio step
    back: at start, after a restore and after each control message, so that control messages
    take effect in their place among the bars whatever the order the topics are read in."""
    checkpoint_interval_ms: Annotated[int, Field(ge=1)] = 10_000
    checkpoint_dir: Path = Path(".cache/flink/checkpoints")
    state_backend: Literal["hashmap", "rocksdb"] = "hashmap"
    delivery: Literal["at-least-once", "exactly-once"] = "at-least-once"
    starting_offsets: Literal["latest", "earliest"] = "latest"
    price_format: Literal["tick", "bourse"] = "tick"


class ValidationSettings(_Model):
    """What every component accepts from a topic, beyond the schema (docs/trust.md).

    A record that breaks a rule changes no state, and goes to the dead-letter topic with a
    machine-readable reason (the dashboard, which only reads, ignores and counts it).
    """

    max_future_skew_ms: Annotated[int, Field(ge=0)] = 300_000
    """A record stamped further than this ahead of the reading component's wall clock is
    refused (``future``), on every topic; a price or heartbeat then moves no watermark. History
    is in the past, so replays of it pass; a simulation that runs faster than real time needs a
    larger value (``examples/demo.yaml``)."""
    max_stats_count: Annotated[int, Field(ge=1)] = 10_000_000
    """Initial statistics claiming more bars than this are refused (``invalid_stats``): a huge
    count would pin a portfolio's mean and Sharpe ratio whatever the market does. Ten million
    one-second bars is about eleven years of CSE sessions."""
    covariance_tolerance: Annotated[float, Field(gt=0, lt=1)] = 1e-9
    """A covariance matrix is accepted as positive semi-definite when its smallest eigenvalue
    is at least ``-covariance_tolerance`` times its largest variance (round-off, not data)."""


class RebalancerSettings(_Model):
    """The rebalancer service."""

    group_id: Annotated[str, Field(min_length=1)] = "streamfolio-rebalancer"


class FeedSettings(_Model):
    """Price feeds (``streamfolio feed``): heartbeats on the prices topic (SEMANTICS.md §4).

    A heartbeat says "nothing with an event time older than T follows on this partition"; a
    feed sends one on every partition of the prices topic at least every ``heartbeat_ms`` of
    wall-clock time, also while nothing trades, so that quiet partitions do not hold the
    streaming job's watermark back.
    """

    heartbeat_ms: Annotated[int, Field(ge=0)] = 200
    """Wall-clock interval between heartbeat rounds. 0 turns heartbeats off: the compatibility
    mode of producers without heartbeats (the reference's), whose quiet partitions then need
    ``streamfolio feed --source heartbeats`` to let bars close."""
    heartbeat_lag_ms: Annotated[int, Field(ge=0)] = 60_000
    """``--source cse`` and ``--source heartbeats``: their heartbeats promise nothing older than
    the wall clock minus this. The exchange reports trades with a delay; a trade published
    later than this after it happened may arrive behind a heartbeat, and the job then judges
    it late."""


# ------------------------------------------------------------------------------------ portfolios


class EstimatorSettings(_Model):
    """Online moments: ``welford`` (all bars weigh the same) or ``ewm`` (half-life in bars)."""

    kind: Literal["welford", "ewm"] = "welford"
    half_life_bars: Positive | None = None

    @model_validator(mode="after")
    def _half_life(self) -> EstimatorSettings:
        if self.kind == "ewm" and self.half_life_bars is None:
            raise _problem(
                "kind ewm needs half_life_bars", "set half_life_bars, e.g. 390", "half_life_bars"
            )
        if self.kind == "welford" and self.half_life_bars is not None:
            raise _problem(
                "half_life_bars is only used by kind ewm",
                "set half_life_bars: null, or kind: ewm",
                "half_life_bars",
            )
        return self


class BoundsSettings(_Model):
    """Long-only weight bounds: ``min``/``max`` for every asset, ``per_asset`` ticker → [lo, hi]."""

    min: Fraction = 0.0
    max: Fraction = 1.0
    per_asset: dict[str, tuple[Fraction, Fraction]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ordered(self) -> BoundsSettings:
        if self.min > self.max:
            raise _problem(f"min {self.min} exceeds max {self.max}", "make min <= max", "min")
        for ticker, (lo, hi) in self.per_asset.items():
            if lo > hi:
                raise _problem(
                    f"lower bound {lo} exceeds upper bound {hi}",
                    "write [lo, hi] with lo <= hi",
                    f"per_asset.{ticker}",
                )
        return self

    def interval(self, ticker: str) -> tuple[float, float]:
        """``(lo, hi)`` for ``ticker``.

        >>> BoundsSettings(max=0.4, per_asset={"ATW": (0.1, 0.5)}).interval("IAM")
        (0.0, 0.4)
        """
        return self.per_asset.get(ticker, (self.min, self.max))


class RebalancePolicySettings(_Model):
    """When to rebalance (``SEMANTICS.md`` §7). Sharpe figures are annualised."""

    sharpe_threshold: float = 0.5
    band: NonNegative = 0.05
    cooldown_seconds: NonNegative = 300.0
    min_improvement: NonNegative = 0.05
    max_turnover: Annotated[float, Field(gt=0, le=1)] = 0.5
    min_observations: Annotated[int, Field(ge=1)] = 20


class ViewSettings(_Model):
    """A Black-Litterman view: ``Σ assets[t]·r_t = return`` (annual), held with ``confidence``.

    One asset with coefficient 1 is an absolute view; ``{A: 1, B: -1}`` says A beats B by
    ``return``. ``confidence`` is Idzorek's, in (0, 1].
    """

    model_config = ConfigDict(populate_by_name=True)

    assets: Annotated[dict[str, float], Field(min_length=1)]
    expected_return: float = Field(alias="return")
    confidence: Annotated[float, Field(gt=0, le=1)] = 0.5

    @field_validator("assets")
    @classmethod
    def _nonzero(cls, value: dict[str, float]) -> dict[str, float]:
        for ticker, coefficient in value.items():
            if coefficient == 0:
                raise _problem("coefficient 0 says nothing", "remove the asset", ticker)
        return value

    @field_validator("expected_return")
    @classmethod
    def _decimal(cls, value: float) -> float:
        if abs(value) >= 1:
            raise _problem(f"annual return {value} looks like a percentage", "write 12 % as 0.12")
        return value


class BlackLittermanSettings(_Model):
    """Initial weights from a Black-Litterman posterior (used when a portfolio has no ``weights``).

    Without ``market_caps`` the prior is the equal-weight portfolio. ``risk_aversion: null`` means
    estimated from the market index (MASI) history.
    """

    market_caps: dict[str, Positive] | None = None
    risk_aversion: Positive | None = None
    tau: Positive = 0.05
    views: tuple[ViewSettings, ...] = ()


# Schemes whose URLs name a real host (not a token in the host's place, as slack://TokenA/...):
# masked, they keep it.
_HOST_SCHEMES = frozenset(
    {"http", "https", "json", "jsons", "xml", "xmls", "form", "forms", "mailto", "mailtos"}
)
_HOSTNAME = re.compile(r"[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def mask_url(url: str) -> str:
    """``url`` without its secrets: ``scheme://host/***`` for a web or mail URL, ``scheme://***``
    for the others (whose host is often a token), ``***`` when it is no URL.

    >>> mask_url("https://hooks.slack.com/services/T000/B000/XXXX")
    'https://hooks.slack.com/***'
    >>> mask_url("json://user:pass@127.0.0.1:8080/hook?token=XXXX")
    'json://127.0.0.1:8080/***'
    >>> mask_url("tgram://123456:bot-token/42"), mask_url("not a URL")
    ('tgram://***', '***')
    """
    scheme, sep, _rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}", scheme):
        return "***"
    if scheme.lower() not in _HOST_SCHEMES:
        return f"{scheme}://***"
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return f"{scheme}://***"
    if not host or not _HOSTNAME.fullmatch(host):
        return f"{scheme}://***"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}{f':{port}' if port else ''}/***"


class SecretURL(SecretStr):
    """A URL that may carry credentials: ``get_secret_value()`` reveals it; ``str``, ``repr``
    and JSON dumps show :func:`mask_url`'s form.

    >>> url = SecretURL("https://user:pass@example.com/hook")
    >>> url, str(url)
    (SecretURL('https://example.com/***'), 'https://example.com/***')
    """

    def _display(self) -> str:
        return mask_url(self.get_secret_value())


def _notify_entry(item: Any, i: int, context: Mapping[str, Any]) -> Any:
    """A ``notify`` entry as a :class:`SecretURL`, ``env:``/``file:`` references resolved."""
    if isinstance(item, SecretStr):
        item = item.get_secret_value()
    if not isinstance(item, str):
        return item  # pydantic says what is wrong, without showing it
    subkey = f"[{i}]"
    if item.startswith("env:"):
        name = item[4:].strip()
        if not _ENV_NAME.fullmatch(name):
            raise _problem(
                "env: must be followed by an environment variable name",
                'write "env:SLACK_URL"',
                subkey,
            )
        environ: Mapping[str, str] = context.get("environ", os.environ)
        value = environ.get(name)
        if value is None:
            raise _problem(
                f"environment variable {name} (from env:{name}) is not set",
                f"export {name} with the notification URL, or remove the entry",
                subkey,
            )
        source = f"environment variable {name}"
    elif item.startswith("file:"):
        path = Path(item[5:].strip()).expanduser()
        if not path.is_absolute():
            path = Path(context.get("base_dir") or ".") / path
        try:
            value = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise _problem(
                f"cannot read {path}: {problem}",
                "create it holding the notification URL alone (relative paths start at the "
                "configuration file's folder), or remove the entry",
                subkey,
            ) from None
        source = f"file {path}"
    else:
        value, source = item, ""
    value = value.strip()
    if not value or "\n" in value or "://" not in value or " " in value:
        what = f"{source} does not hold" if source else "this entry is not"
        raise _problem(
            f"{what} a notification URL (one line, scheme://…)",
            'an apprise URL such as mailto://user:pass@example.com, "env:NAME" (an environment '
            'variable holding one) or "file:PATH" (a file holding one)',
            subkey,
        )
    return SecretURL(value)


class _PortfolioParams(_Model):
    # Fields a portfolio may inherit from `defaults`.
    owner: str | None = None
    risk_free_rate: float = 0.025
    bar_seconds: int = 60
    periods_per_year: Positive | None = None
    estimator: EstimatorSettings = EstimatorSettings()
    prior_count: Annotated[int, Field(ge=2)] | None = None
    bounds: BoundsSettings = BoundsSettings()
    gamma: NonNegative = 0.1
    policy: RebalancePolicySettings = RebalancePolicySettings()
    notify: tuple[SecretURL, ...] = ()
    """Apprise URLs, kept secret; ``env:NAME`` and ``file:PATH`` entries are read at load."""

    @field_validator("risk_free_rate")
    @classmethod
    def _rate(cls, value: float) -> float:
        if not -1 < value < 1:
            raise _problem(f"annual rate {value} looks like a percentage", "write 2.5 % as 0.025")
        return value

    @field_validator("bar_seconds")
    @classmethod
    def _epoch_aligned(cls, value: int) -> int:
        if value <= 0 or (DAY_SECONDS % value and value % DAY_SECONDS):
            raise _problem(
                f"bar_seconds {value} does not tile a day",
                "use a divisor of 86400 (60, 300, 900, 3600, 86400) or whole days (604800)",
            )
        return value

    @field_validator("notify", mode="before")
    @classmethod
    def _urls(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, list | tuple):
            return value
        context = info.context or {}
        return tuple(_notify_entry(item, i, context) for i, item in enumerate(value))


class PortfolioDefaults(_PortfolioParams):
    """Values every portfolio inherits unless it sets them (mappings merge key by key)."""


class PortfolioSettings(_PortfolioParams):
    """One portfolio: its tickers, initial weights and the parameters of its analytics."""

    id: str
    tickers: tuple[str, ...]
    weights: dict[str, float] | None = None
    black_litterman: BlackLittermanSettings | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _PORTFOLIO_ID.fullmatch(value):
            raise _problem(
                f"{value!r} is not a valid portfolio id",
                "up to 64 letters, digits, '.', '_' or '-', e.g. portf1",
            )
        return value

    @field_validator("tickers")
    @classmethod
    def _tickers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise _problem("a portfolio needs at least one ticker", "list tickers, e.g. [ATW, IAM]")
        for i, ticker in enumerate(value):
            if not _TICKER.fullmatch(ticker):
                raise _problem(
                    f"{ticker!r} is not a ticker",
                    "write it in capitals as the exchange does",
                    f"[{i}]",
                )
        duplicates = sorted({t for t in value if value.count(t) > 1})
        if duplicates:
            raise _problem(f"duplicate tickers {duplicates}", "list each ticker once")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PortfolioSettings:
        self._check_bounds()
        if self.weights is not None:
            self._check_weights(self.weights)
            if self.black_litterman is not None:
                raise _problem(
                    "black_litterman is unused when weights are given",
                    "remove weights (to use Black-Litterman) or black_litterman",
                    "black_litterman",
                )
        if self.black_litterman is not None:
            self._check_black_litterman(self.black_litterman)
        return self

    def _check_members(self, names: Mapping[str, object], subkey: str, fix: str) -> None:
        extra = [t for t in names if t not in self.tickers]
        if extra:
            raise _problem(
                f"{extra} not in this portfolio's tickers {list(self.tickers)}", fix, subkey
            )

    def _check_bounds(self) -> None:
        self._check_members(
            self.bounds.per_asset, "bounds.per_asset", "bound only the portfolio's tickers"
        )
        lo = sum(self.bounds.interval(t)[0] for t in self.tickers)
        hi = sum(self.bounds.interval(t)[1] for t in self.tickers)
        if lo > 1 + WEIGHT_TOLERANCE or hi < 1 - WEIGHT_TOLERANCE:
            raise _problem(
                f"no weights fit: lower bounds sum to {lo:g}, upper bounds to {hi:g}",
                "bounds must allow weights summing to 1: sum(lo) <= 1 <= sum(hi)",
                "bounds",
            )

    def _check_weights(self, weights: dict[str, float]) -> None:
        missing = [t for t in self.tickers if t not in weights]
        extra = [t for t in weights if t not in self.tickers]
        if missing or extra:
            parts = [f"missing {missing}" if missing else "", f"extra {extra}" if extra else ""]
            raise _problem(
                "weights must cover exactly the tickers: " + ", ".join(p for p in parts if p),
                "give one weight per ticker",
                "weights",
            )
        for ticker, weight in weights.items():
            if weight < 0:
                raise _problem(
                    f"weight {weight} is negative",
                    "weights are long-only: >= 0",
                    f"weights.{ticker}",
                )
            lo, hi = self.bounds.interval(ticker)
            if not lo - 1e-9 <= weight <= hi + 1e-9:
                raise _problem(
                    f"weight {weight} is outside the bounds [{lo}, {hi}]",
                    "change the weight or the bounds",
                    f"weights.{ticker}",
                )
        total = math.fsum(weights.values())
        if abs(total - 1) > WEIGHT_TOLERANCE:
            raise _problem(
                f"weights sum to {total:.10g}, not 1", "scale them so they sum to 1", "weights"
            )

    def _check_black_litterman(self, bl: BlackLittermanSettings) -> None:
        if bl.market_caps is not None:
            self._check_members(
                bl.market_caps, "black_litterman.market_caps", "give caps for this portfolio only"
            )
            missing = [t for t in self.tickers if t not in bl.market_caps]
            if missing:
                raise _problem(
                    f"no market cap for {missing}",
                    "give every ticker a cap, or remove market_caps for an equal-weight prior",
                    "black_litterman.market_caps",
                )
        for i, view in enumerate(bl.views):
            self._check_members(
                view.assets, f"black_litterman.views[{i}].assets", "views may use only its tickers"
            )

    @property
    def initial_black_litterman(self) -> BlackLittermanSettings | None:
        """The Black-Litterman settings that give the initial weights, or None if ``weights`` do.

        >>> PortfolioSettings(id="p", tickers=["ATW"]).initial_black_litterman.tau
        0.05
        """
        if self.weights is not None:
            return None
        return self.black_litterman or BlackLittermanSettings()

    def periods_per_year_value(self, exchange: ExchangeSettings) -> float:
        """``periods_per_year`` if set, else derived from ``bar_seconds`` and the calendar.

        >>> PortfolioSettings(id="p", tickers=["ATW"]).periods_per_year_value(ExchangeSettings())
        88560.0
        """
        if self.periods_per_year is not None:
            return self.periods_per_year
        return periods_per_year(self.bar_seconds, exchange.calendar())


# -------------------------------------------------------------------------------------- settings


class Settings(_Model):
    """Everything a streamfolio process is configured with."""

    exchange: ExchangeSettings = ExchangeSettings()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    flink: FlinkSettings = FlinkSettings()
    validation: ValidationSettings = ValidationSettings()
    rebalancer: RebalancerSettings = RebalancerSettings()
    feed: FeedSettings = FeedSettings()
    defaults: PortfolioDefaults = PortfolioDefaults()
    portfolios: tuple[PortfolioSettings, ...]

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        # flink.max_future_skew_ms became validation.max_future_skew_ms (every topic, every
        # component); old files keep loading.
        flink = data.get("flink") if isinstance(data, Mapping) else None
        if not isinstance(flink, Mapping) or "max_future_skew_ms" not in flink:
            return data
        validation = _plain(data.get("validation")) or {}
        if isinstance(validation, Mapping) and "max_future_skew_ms" in validation:
            raise _problem(
                "max_future_skew_ms is set both here and under validation",
                "keep only validation.max_future_skew_ms",
                "flink.max_future_skew_ms",
            )
        warnings.warn(
            "config key flink.max_future_skew_ms is now validation.max_future_skew_ms",
            DeprecationWarning,
            stacklevel=2,
        )
        flink = {k: v for k, v in _plain(flink).items() if k != "max_future_skew_ms"}
        moved = {**validation, "max_future_skew_ms": data["flink"]["max_future_skew_ms"]}
        return {**data, "flink": flink, "validation": moved}

    @model_validator(mode="before")
    @classmethod
    def _merge_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data
        defaults = _plain(data.get("defaults"))
        portfolios = data.get("portfolios")
        if not isinstance(defaults, Mapping) or not isinstance(portfolios, list | tuple):
            return data
        try:
            PortfolioDefaults.model_validate(defaults, context=info.context)
        except ValidationError:
            return data  # reported at `defaults.…`, once rather than again in every portfolio
        merged = [_deep_merge(defaults, p) for p in map(_plain, portfolios)]
        return {**data, "portfolios": merged}

    @field_validator("portfolios")
    @classmethod
    def _unique(cls, value: tuple[PortfolioSettings, ...]) -> tuple[PortfolioSettings, ...]:
        if not value:
            raise _problem("no portfolio configured", "add one; see examples/minimal.yaml")
        ids = [p.id for p in value]
        for i, pid in enumerate(ids):
            if pid in ids[:i]:
                raise _problem(
                    f"portfolio id {pid!r} is used twice", "give each a distinct id", f"[{i}].id"
                )
        return value

    def portfolio(self, portfolio_id: str) -> PortfolioSettings:
        """The portfolio with this id.

        >>> load_config(example_config_path(), environ={}).portfolio("nope")
        Traceback (most recent call last):
        ...
        streamfolio.errors.ConfigError: config key 'portfolios': no portfolio 'nope' \
(fix: use one of portf1, banks)
        """
        for p in self.portfolios:
            if p.id == portfolio_id:
                return p
        known = ", ".join(p.id for p in self.portfolios)
        raise ConfigError("portfolios", f"no portfolio {portfolio_id!r}", f"use one of {known}")


def _plain(value: Any) -> Any:
    # Models given programmatically are merged as the keys their author actually set.
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True, by_alias=True)
    return value


def _deep_merge(base: Mapping[str, Any], override: Any) -> Any:
    if not isinstance(override, Mapping):
        return override
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        merged[key] = _deep_merge(below, value) if isinstance(below, Mapping) else value
    return merged


# ---------------------------------------------------------------------------------------- loading


def example_config_path() -> Path:
    """The packaged copy of ``examples/cse.yaml``: every key, with comments.

    >>> example_config_path().name
    'cse.yaml'
    """
    return Path(str(resources.files("streamfolio").joinpath("data", "examples", "cse.yaml")))


def load_config(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, override from the environment and validate a YAML configuration file.

    ``path`` defaults to ``$STREAMFOLIO_CONFIG``; ``environ`` to ``os.environ``.

    >>> load_config(environ={})
    Traceback (most recent call last):
    ...
    streamfolio.errors.ConfigError: config key '--config': no configuration file given \
(fix: pass --config PATH or set STREAMFOLIO_CONFIG; see examples/cse.yaml)
    """
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get(CONFIG_ENV) or None
    if path is None:
        raise ConfigError(
            "--config",
            "no configuration file given",
            f"pass --config PATH or set {CONFIG_ENV}; see {_EXAMPLE}",
        )
    raw = _read_yaml(Path(path))
    from_env = _apply_environment(raw, env)
    return settings_from_mapping(
        raw, from_env=from_env, environ=env, base_dir=Path(path).resolve().parent
    )


def settings_from_mapping(
    data: Mapping[str, Any],
    *,
    from_env: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Settings:
    """Validate parsed configuration, turning the first problem into a :class:`ConfigError`.

    ``from_env`` maps dotted keys to the environment variables that set them, for the message.
    ``notify`` entries ``env:NAME`` read ``environ`` (default ``os.environ``), and relative
    ``file:PATH`` ones start at ``base_dir`` (default: the working directory).

    >>> settings_from_mapping({"portfolios": [{"id": "p", "tickers": ["ATW", "IAM"],
    ...                        "weights": {"ATW": 0.6, "IAM": 0.5}}]})
    Traceback (most recent call last):
    ...
    streamfolio.errors.ConfigError: config key 'portfolios[p].weights': weights sum to 1.1, not 1 \
(fix: scale them so they sum to 1)
    """
    try:
        context = {"environ": os.environ if environ is None else environ, "base_dir": base_dir}
        return Settings.model_validate(data, context=context)
    except ValidationError as exc:
        raise _config_error(exc, data, from_env or {}) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    first_line: dict[Hashable, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, Hashable) and key in first_line:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} appears twice (first on line {first_line[key] + 1})",
                key_node.start_mark,
            )
        if isinstance(key, Hashable):
            first_line[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _read_yaml(path: Path) -> dict[str, Any]:
    fix = f"check the path; {_EXAMPLE} is a complete example"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("--config", f"file {path} not found", fix) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc}", fix) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            "--config", f"{path} is not valid YAML{where}: {exc.problem}", "fix the syntax there"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            "--config", f"{path} is not valid YAML: {exc}", "fix the syntax"
        ) from None
    if data is None:
        raise ConfigError("--config", f"{path} is empty", f"start from {_EXAMPLE}")
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(
            "--config",
            f"{path} holds a {kind}, not a mapping of sections",
            f"start from {_EXAMPLE}",
        )
    return data


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Set ``STREAMFOLIO_A__B…`` variables into ``raw``; return dotted key → variable name."""
    applied: dict[str, str] = {}
    for name in sorted(environ):
        if not name.upper().startswith(_ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(_ENV_PREFIX) :].split("__")]
        if parts[0] == "portfolios" or not all(parts):
            raise ConfigError(
                name,
                "cannot be set from the environment",
                "set it in the file; a notification URL can come from a variable there: notify: "
                '["env:NAME"]',
            )
        value: Any = environ[name]
        if parts[:2] == ["kafka", "security"] and len(parts) > 2:
            parts = [*parts[:2], ".".join(parts[2:]).replace("_", ".")]
        elif parts[-1] == "notify" and not value.lstrip().startswith("["):
            value = [value]  # one URL, taken as it is: YAML could mangle it
        else:
            with contextlib.suppress(yaml.YAMLError):  # not YAML: keep the text as it is
                value = yaml.safe_load(value)
        node = raw
        for part in parts[:-1]:
            if node.get(part) is None:  # absent, or a section left empty in the file
                node[part] = {}
            if not isinstance(node[part], dict):
                break  # validation reports the malformed section itself
            node = node[part]
        else:
            node[parts[-1]] = value
            applied[".".join(parts)] = name
    return applied


# --------------------------------------------------------------------------- error translation


def _config_error(
    exc: ValidationError, data: Mapping[str, Any], from_env: Mapping[str, str]
) -> ConfigError:
    errors = exc.errors(include_url=False)
    error = errors[0]
    loc = tuple(p for p in error["loc"] if p != "[key]")
    ctx = error.get("ctx") or {}
    key = _dotted(loc, data)
    if ctx.get("subkey"):
        subkey = str(ctx["subkey"])
        key += subkey if subkey.startswith("[") or not key else "." + subkey
    problem, fix = _describe(error, loc)
    for env_key, env_name in from_env.items():
        if key == env_key or key.startswith((env_key + ".", env_key + "[")):
            problem += f" (set by environment variable {env_name})"
    if len(errors) > 1:
        others = sorted({_dotted(tuple(e["loc"]), data) for e in errors[1:]} - {key})
        if others:
            problem += f"; also check {', '.join(others[:5])}" + ("…" if len(others) > 5 else "")
    return ConfigError(key, problem, fix)


_SECRET_KEYS = frozenset({"notify", "security"})


def _describe(error: Mapping[str, Any], loc: tuple[int | str, ...]) -> tuple[str, str]:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if any(part in _SECRET_KEYS for part in loc):
        value = None  # never echo what may be a password or a token
    if kind == "streamfolio":
        return str(error["msg"]), str(ctx["fix"])
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return "unknown key", f"{hint}allowed keys here: {', '.join(allowed)}"
    if kind == "missing":
        return "required key is missing", f"add it; see {_EXAMPLE}"
    message = str(error["msg"])
    problem = message[:1].lower() + message[1:]
    if isinstance(value, bool | int | float | str | dt.date) and value is not None:
        shown = repr(value)
        problem += f", got {shown if len(shown) <= 60 else shown[:57] + '...'}"
    if isinstance(value, bool) and kind.endswith("_type"):
        return problem, "quote the value: YAML reads yes/no/on/off as booleans"
    if kind == "literal_error":
        return problem, "use one of the values listed"
    return problem, f"see {_EXAMPLE}, which documents every key"


def _dotted(loc: tuple[int | str, ...], data: Any) -> str:
    key = ""
    node: Any = data
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            item = node[part] if isinstance(node, list | tuple) and part < len(node) else None
            label: object = part
            if key == "portfolios" and isinstance(item, Mapping):
                pid = item.get("id")
                if isinstance(pid, str) and _PORTFOLIO_ID.fullmatch(pid):
                    label = pid
            key += f"[{label}]"
            node = item
        else:
            key += f".{part}" if key else part
            node = node.get(part) if isinstance(node, Mapping) else None
    return key


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] | None = Settings
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int) or part == "[key]":
            continue
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        model = _model_in(field.annotation) if field else None
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
