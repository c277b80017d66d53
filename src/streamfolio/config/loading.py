"""Loading: reading the YAML file (a key given twice is an error), applying
``STREAMFOLIO_<SECTION>__<KEY>`` environment overrides, and validating the result into
:class:`~streamfolio.config.settings.Settings` (:func:`load_config`,
:func:`settings_from_mapping`); :func:`example_config_path` is the packaged ``examples/cse.yaml``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Hashable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from streamfolio.config.base import CONFIG_ENV, EXAMPLE
from streamfolio.config.errors import config_error
from streamfolio.config.settings import Settings
from streamfolio.errors import ConfigError

_ENV_PREFIX = "STREAMFOLIO_"


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
            f"pass --config PATH or set {CONFIG_ENV}; see {EXAMPLE}",
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
        raise config_error(exc, data, from_env or {}) from None


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
    fix = f"check the path; {EXAMPLE} is a complete example"
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
        raise ConfigError("--config", f"{path} is empty", f"start from {EXAMPLE}")
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(
            "--config",
            f"{path} holds a {kind}, not a mapping of sections",
            f"start from {EXAMPLE}",
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
        if parts[:2] in (["kafka", "librdkafka"], ["kafka", "java"]) and len(parts) > 2:
            parts = [*parts[:2], ".".join(parts[2:]).replace("_", ".")]
        elif parts[:2] == ["kafka", "security"]:
            pass  # names, passwords and paths: taken as they are, never as YAML numbers
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
