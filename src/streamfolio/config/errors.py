"""Translating pydantic's validation errors into one :class:`~streamfolio.errors.ConfigError`:
the key as a dotted path with portfolios named by id (``portfolios[banks].weights``), the problem
(never echoing a secret), which environment variable set it, and how to fix it.
"""

from __future__ import annotations

import datetime as dt
import difflib
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from streamfolio.config.base import EXAMPLE, PORTFOLIO_ID
from streamfolio.config.settings import Settings
from streamfolio.errors import ConfigError


def config_error(
    exc: ValidationError, data: Mapping[str, Any], from_env: Mapping[str, str]
) -> ConfigError:
    """The first of ``exc``'s problems as a :class:`ConfigError` (the others named as keys to
    check); ``data`` is what was validated, ``from_env`` maps dotted keys to the environment
    variables that set them."""
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


_SECRET_KEYS = frozenset({"notify", "security", "librdkafka", "java"})


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
        return "required key is missing", f"add it; see {EXAMPLE}"
    message = str(error["msg"])
    problem = message[:1].lower() + message[1:]
    if isinstance(value, bool | int | float | str | dt.date) and value is not None:
        shown = repr(value)
        problem += f", got {shown if len(shown) <= 60 else shown[:57] + '...'}"
    if isinstance(value, bool) and kind.endswith("_type"):
        return problem, "quote the value: YAML reads yes/no/on/off as booleans"
    if kind == "literal_error":
        return problem, "use one of the values listed"
    return problem, f"see {EXAMPLE}, which documents every key"


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
                if isinstance(pid, str) and PORTFOLIO_ID.fullmatch(pid):
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
