"""Settings: one frozen, validated object per process, loaded from a YAML file.

Every default lives here. :func:`load_config` reads the file named by its argument, else by the
environment variable ``STREAMFOLIO_CONFIG``; ``examples/cse.yaml`` documents every key and
``examples/minimal.yaml`` is the smallest valid file. Any problem (a missing file, a YAML syntax
error, an unknown key, a bad value) raises :class:`~streamfolio.errors.ConfigError` naming the key
as a dotted path, portfolios by id (``portfolios[banks].weights``), and saying how to fix it.

Environment overrides, for hosts and secrets that do not belong in a committed file: a variable
``STREAMFOLIO_<SECTION>__<KEY>[__<KEY>…]`` sets that key, case-insensitively, over the file. The
value is read as YAML, so ``STREAMFOLIO_FLINK__PARALLELISM=4`` is a number; under
``kafka.security`` it is always a string (``STREAMFOLIO_KAFKA__SECURITY__PASSWORD``). Under
``kafka.librdkafka`` and ``kafka.java`` (raw client properties) ``_`` in the key stands for ``.``,
so ``STREAMFOLIO_KAFKA__LIBRDKAFKA__SOCKET_TIMEOUT_MS`` sets ``socket.timeout.ms``.
Portfolios cannot be set this way.

Secrets: Kafka passwords, raw Kafka properties and notification URLs (``notify``) are kept as
secrets, shown masked in reprs, dumps and error messages (``SecretStr('**********')``,
``SecretURL('https://hooks.slack.com/***')``). A ``notify`` entry ``env:NAME`` is read from the
environment variable ``NAME`` and ``file:PATH`` from a file (relative to the configuration file's
folder), when the configuration loads; ``STREAMFOLIO_DEFAULTS__NOTIFY`` sets every portfolio's.

The package, by concept: ``sections`` (exchange, Kafka, topics, Flink, validation, rebalancer,
feed), ``portfolio`` (the portfolio models and their defaults), ``secrets`` (:class:`SecretURL`,
``env:``/``file:`` references), ``settings`` (the root :class:`Settings`), ``loading`` (YAML,
environment overrides, :func:`load_config`), ``errors`` (pydantic errors → ``ConfigError``) and
``base`` (what they share). Import from here: ``from streamfolio.config import Settings``.

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

from streamfolio.config.base import CONFIG_ENV, WEIGHT_TOLERANCE
from streamfolio.config.kafka_security import (
    COMPONENTS,
    Component,
    KafkaCredentials,
    KafkaSecurity,
)
from streamfolio.config.loading import example_config_path, load_config, settings_from_mapping
from streamfolio.config.portfolio import (
    BlackLittermanSettings,
    BoundsSettings,
    EstimatorSettings,
    PortfolioDefaults,
    PortfolioSettings,
    RebalancePolicySettings,
    ViewSettings,
)
from streamfolio.config.secrets import SecretURL, mask_url
from streamfolio.config.sections import (
    ExchangeSettings,
    FeedSettings,
    FlinkSettings,
    KafkaSettings,
    LocalKafkaSettings,
    MetricsSettings,
    RebalancerSettings,
    TopicSettings,
    ValidationSettings,
)
from streamfolio.config.settings import Settings

__all__ = [
    "COMPONENTS",
    "CONFIG_ENV",
    "WEIGHT_TOLERANCE",
    "BlackLittermanSettings",
    "BoundsSettings",
    "Component",
    "EstimatorSettings",
    "ExchangeSettings",
    "FeedSettings",
    "FlinkSettings",
    "KafkaCredentials",
    "KafkaSecurity",
    "KafkaSettings",
    "LocalKafkaSettings",
    "MetricsSettings",
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
