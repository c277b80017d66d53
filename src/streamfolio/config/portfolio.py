"""The portfolio models: estimator, weight bounds, rebalance policy, Black-Litterman views, the
parameters a portfolio may inherit from ``defaults`` (:class:`PortfolioDefaults`), and
:class:`PortfolioSettings`, which checks its weights, bounds and views against its tickers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from streamfolio.config.base import (
    PORTFOLIO_ID,
    TICKER,
    WEIGHT_TOLERANCE,
    Fraction,
    NonNegative,
    Positive,
    StrictModel,
    invalid,
)
from streamfolio.config.secrets import SecretURL, notify_entry
from streamfolio.config.sections import ExchangeSettings
from streamfolio.core.calendar import DAY_SECONDS, periods_per_year


class EstimatorSettings(StrictModel):
    """Online moments: ``welford`` (all bars weigh the same) or ``ewm`` (half-life in bars)."""

    kind: Literal["welford", "ewm"] = "welford"
    half_life_bars: Positive | None = None

    @model_validator(mode="after")
    def _half_life(self) -> EstimatorSettings:
        if self.kind == "ewm" and self.half_life_bars is None:
            raise invalid(
                "kind ewm needs half_life_bars", "set half_life_bars, e.g. 390", "half_life_bars"
            )
        if self.kind == "welford" and self.half_life_bars is not None:
            raise invalid(
                "half_life_bars is only used by kind ewm",
                "set half_life_bars: null, or kind: ewm",
                "half_life_bars",
            )
        return self


class BoundsSettings(StrictModel):
    """Long-only weight bounds: ``min``/``max`` for every asset, ``per_asset`` ticker → [lo, hi]."""

    min: Fraction = 0.0
    max: Fraction = 1.0
    per_asset: dict[str, tuple[Fraction, Fraction]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ordered(self) -> BoundsSettings:
        if self.min > self.max:
            raise invalid(f"min {self.min} exceeds max {self.max}", "make min <= max", "min")
        for ticker, (lo, hi) in self.per_asset.items():
            if lo > hi:
                raise invalid(
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


class RebalancePolicySettings(StrictModel):
    """When to rebalance (``SEMANTICS.md`` §7). Sharpe figures are annualised."""

    sharpe_threshold: float = 0.5
    band: NonNegative = 0.05
    cooldown_seconds: NonNegative = 300.0
    min_improvement: NonNegative = 0.05
    max_turnover: Annotated[float, Field(gt=0, le=1)] = 0.5
    min_observations: Annotated[int, Field(ge=1)] = 20


class ObjectiveSettings(StrictModel):
    """What the policy optimises when it rebalances (``streamfolio.core.policy``).

    ``max_sharpe`` (the default), ``min_volatility``, ``efficient_risk`` (the most return for
    ``target_volatility``) or ``efficient_return`` (the least risk for ``target_return``); the
    targets are annual decimals. A bare name stands for ``{kind: name}``.

    >>> ObjectiveSettings.model_validate("min_volatility").kind
    'min_volatility'
    """

    kind: Literal["max_sharpe", "min_volatility", "efficient_risk", "efficient_return"] = (
        "max_sharpe"
    )
    target_volatility: Annotated[float, Field(gt=0, lt=5)] | None = None
    target_return: Annotated[float, Field(gt=-1, lt=1)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _targets(self) -> ObjectiveSettings:
        needs = {"efficient_risk": "target_volatility", "efficient_return": "target_return"}
        wanted = needs.get(self.kind)
        if wanted is not None and getattr(self, wanted) is None:
            raise invalid(f"kind {self.kind} needs {wanted}", f"set {wanted}, e.g. 0.15", wanted)
        for name in ("target_volatility", "target_return"):
            if name != wanted and getattr(self, name) is not None:
                raise invalid(f"{name} is not used by kind {self.kind}", f"remove {name}", name)
        return self


class ViewSettings(StrictModel):
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
                raise invalid("coefficient 0 says nothing", "remove the asset", ticker)
        return value

    @field_validator("expected_return")
    @classmethod
    def _decimal(cls, value: float) -> float:
        if abs(value) >= 1:
            raise invalid(f"annual return {value} looks like a percentage", "write 12 % as 0.12")
        return value


class BlackLittermanSettings(StrictModel):
    """Initial weights from a Black-Litterman posterior (used when a portfolio has no ``weights``).

    Without ``market_caps`` the prior is the equal-weight portfolio. ``risk_aversion: null`` means
    estimated from the market index (MASI) history.
    """

    market_caps: dict[str, Positive] | None = None
    risk_aversion: Positive | None = None
    tau: Positive = 0.05
    views: tuple[ViewSettings, ...] = ()


class _PortfolioParams(StrictModel):
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
    objective: ObjectiveSettings = ObjectiveSettings()
    notify: tuple[SecretURL, ...] = ()
    """Apprise URLs, kept secret; ``env:NAME`` and ``file:PATH`` entries are read at load."""

    @field_validator("risk_free_rate")
    @classmethod
    def _rate(cls, value: float) -> float:
        if not -1 < value < 1:
            raise invalid(f"annual rate {value} looks like a percentage", "write 2.5 % as 0.025")
        return value

    @field_validator("bar_seconds")
    @classmethod
    def _epoch_aligned(cls, value: int) -> int:
        if value <= 0 or (DAY_SECONDS % value and value % DAY_SECONDS):
            raise invalid(
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
        return tuple(notify_entry(item, i, context) for i, item in enumerate(value))


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
        if not PORTFOLIO_ID.fullmatch(value):
            raise invalid(
                f"{value!r} is not a valid portfolio id",
                "up to 64 letters, digits, '.', '_' or '-', e.g. portf1",
            )
        return value

    @field_validator("tickers")
    @classmethod
    def _tickers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise invalid("a portfolio needs at least one ticker", "list tickers, e.g. [ATW, IAM]")
        for i, ticker in enumerate(value):
            if not TICKER.fullmatch(ticker):
                raise invalid(
                    f"{ticker!r} is not a ticker",
                    "write it in capitals as the exchange does",
                    f"[{i}]",
                )
        duplicates = sorted({t for t in value if value.count(t) > 1})
        if duplicates:
            raise invalid(f"duplicate tickers {duplicates}", "list each ticker once")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PortfolioSettings:
        self._check_bounds()
        if self.weights is not None:
            self._check_weights(self.weights)
            if self.black_litterman is not None:
                raise invalid(
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
            raise invalid(
                f"{extra} not in this portfolio's tickers {list(self.tickers)}", fix, subkey
            )

    def _check_bounds(self) -> None:
        self._check_members(
            self.bounds.per_asset, "bounds.per_asset", "bound only the portfolio's tickers"
        )
        lo = sum(self.bounds.interval(t)[0] for t in self.tickers)
        hi = sum(self.bounds.interval(t)[1] for t in self.tickers)
        if lo > 1 + WEIGHT_TOLERANCE or hi < 1 - WEIGHT_TOLERANCE:
            raise invalid(
                f"no weights fit: lower bounds sum to {lo:g}, upper bounds to {hi:g}",
                "bounds must allow weights summing to 1: sum(lo) <= 1 <= sum(hi)",
                "bounds",
            )

    def _check_weights(self, weights: dict[str, float]) -> None:
        missing = [t for t in self.tickers if t not in weights]
        extra = [t for t in weights if t not in self.tickers]
        if missing or extra:
            parts = [f"missing {missing}" if missing else "", f"extra {extra}" if extra else ""]
            raise invalid(
                "weights must cover exactly the tickers: " + ", ".join(p for p in parts if p),
                "give one weight per ticker",
                "weights",
            )
        for ticker, weight in weights.items():
            if weight < 0:
                raise invalid(
                    f"weight {weight} is negative",
                    "weights are long-only: >= 0",
                    f"weights.{ticker}",
                )
            lo, hi = self.bounds.interval(ticker)
            if not lo - 1e-9 <= weight <= hi + 1e-9:
                raise invalid(
                    f"weight {weight} is outside the bounds [{lo}, {hi}]",
                    "change the weight or the bounds",
                    f"weights.{ticker}",
                )
        total = math.fsum(weights.values())
        if abs(total - 1) > WEIGHT_TOLERANCE:
            raise invalid(
                f"weights sum to {total:.10g}, not 1", "scale them so they sum to 1", "weights"
            )

    def _check_black_litterman(self, bl: BlackLittermanSettings) -> None:
        if bl.market_caps is not None:
            self._check_members(
                bl.market_caps, "black_litterman.market_caps", "give caps for this portfolio only"
            )
            missing = [t for t in self.tickers if t not in bl.market_caps]
            if missing:
                raise invalid(
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
