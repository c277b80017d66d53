"""The root model, :class:`Settings`: every section, the portfolio defaults merged into each
portfolio, and keys that moved (old files keep loading, with a warning).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator, model_validator

from streamfolio.config.base import StrictModel, invalid
from streamfolio.config.portfolio import PortfolioDefaults, PortfolioSettings
from streamfolio.config.sections import (
    ExchangeSettings,
    FeedSettings,
    FlinkSettings,
    KafkaSettings,
    MetricsSettings,
    RebalancerSettings,
    TopicSettings,
    ValidationSettings,
)
from streamfolio.errors import ConfigError


class Settings(StrictModel):
    """Everything a streamfolio process is configured with."""

    exchange: ExchangeSettings = ExchangeSettings()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    flink: FlinkSettings = FlinkSettings()
    validation: ValidationSettings = ValidationSettings()
    rebalancer: RebalancerSettings = RebalancerSettings()
    feed: FeedSettings = FeedSettings()
    metrics: MetricsSettings = MetricsSettings()
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
            raise invalid(
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
            raise invalid("no portfolio configured", "add one; see examples/minimal.yaml")
        ids = [p.id for p in value]
        for i, pid in enumerate(ids):
            if pid in ids[:i]:
                raise invalid(
                    f"portfolio id {pid!r} is used twice", "give each a distinct id", f"[{i}].id"
                )
        return value

    def portfolio(self, portfolio_id: str) -> PortfolioSettings:
        """The portfolio with this id.

        >>> from streamfolio.config import example_config_path, load_config
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
