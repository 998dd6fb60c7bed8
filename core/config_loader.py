"""Load ``config.yaml`` and the environment into one validated :class:`AppConfig`.

Precedence, highest first: environment variables, the YAML file, the model's defaults.

The seed's variable names work: ``REDIS_URL``, ``REDIS_HOST``, ``REDIS_PORT``, ``REDIS_DB``,
``REDIS_PASSWORD``, ``<EXCHANGE>_API_KEY``, ``<EXCHANGE>_API_SECRET``,
``<EXCHANGE>_API_PASSWORD`` (OKX's passphrase), ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
``LLM_MODEL`` and ``TRADING_MODE``. Any other field can be set with
``CRYPTO_AI__<SECTION>__<FIELD>`` (for example ``CRYPTO_AI__CELERY__VISIBILITY_TIMEOUT=60``);
the value is read as YAML, so numbers and booleans keep their type.

Every problem is reported at once, as a :class:`core.errors.ConfigError` that names the file
(or the environment variable) and the field path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from core.config import AppConfig, cross_reference_problems
from core.errors import ConfigError

#: The environment variable that names the config file.
CONFIG_ENV = "CRYPTO_AI_CONFIG"
_GENERIC_PREFIX = "CRYPTO_AI__"
_SECRET_FIELDS = {"api_key", "api_secret", "password", "url", "basic_auth", "webhook_url"}
_SEED_VARIABLES: dict[str, tuple[str, ...]] = {
    "REDIS_URL": ("redis", "url"),
    "REDIS_HOST": ("redis", "host"),
    "REDIS_PORT": ("redis", "port"),
    "REDIS_DB": ("redis", "db"),
    "REDIS_PASSWORD": ("redis", "password"),
    "OPENAI_API_KEY": ("llm", "api_key"),
    "OPENAI_BASE_URL": ("llm", "base_url"),
    "LLM_MODEL": ("llm", "model"),
    "TRADING_MODE": ("trading", "mode"),
}
_EXCHANGE_SUFFIXES = {
    "_API_KEY": "api_key",
    "_API_SECRET": "api_secret",
    "_API_PASSWORD": "password",
}


def resolve_config_path(path: str | Path | None, env: Mapping[str, str]) -> Path | None:
    """Return the file to read: the argument, else ``$CRYPTO_AI_CONFIG``, else ./config.yaml."""
    if path is not None:
        return Path(path)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = Path("config.yaml")
    return default if default.exists() else None


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> AppConfig:
    """Read, merge and validate the configuration; raise ConfigError naming every problem."""
    env = os.environ if env is None else env
    file = resolve_config_path(path, env)
    source = str(file) if file else "<defaults>"
    raw = _read_yaml(file) if file else {}
    origins: dict[tuple[str, ...], str] = {}
    _apply_environment(raw, env, origins)
    try:
        config = AppConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc, origins)) from None
    problems = cross_reference_problems(config)
    if problems:
        raise ConfigError(source, problems)
    return config


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(file), [("", "file not found")]) from None
    except OSError as exc:
        raise ConfigError(str(file), [("", f"cannot read the file: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start : exc.start + 1].hex()
        problem = f"not a UTF-8 text file (byte 0x{byte} at offset {exc.start}); expected YAML"
        raise ConfigError(str(file), [("", problem)]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        # a reader error (a control character) spans lines: the render keeps one per problem
        problem = " ".join(str(problem).split())
        raise ConfigError(str(file), [("", f"not valid YAML: {where}{problem}")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            str(file), [("", f"expected a mapping of sections, got {type(data).__name__}")]
        )
    return data


def _apply_environment(
    raw: dict[str, Any], env: Mapping[str, str], origins: dict[tuple[str, ...], str]
) -> None:
    for name, path in _SEED_VARIABLES.items():
        if env.get(name):
            _set(raw, path, env[name])
            origins[path] = name
    exchanges = raw.get("exchanges")
    if isinstance(exchanges, dict):
        for key in exchanges:
            prefix = re.sub(r"[^A-Z0-9]", "_", str(key).upper())
            for suffix, field in _EXCHANGE_SUFFIXES.items():
                if env.get(prefix + suffix):
                    path = ("exchanges", str(key), field)
                    _set(raw, path, env[prefix + suffix])
                    origins[path] = prefix + suffix
    for name, value in env.items():
        if name.startswith(_GENERIC_PREFIX) and len(name) > len(_GENERIC_PREFIX):
            path = tuple(part.lower() for part in name[len(_GENERIC_PREFIX) :].split("__"))
            _set(raw, path, _parse_scalar(value))
            origins[path] = name


def _parse_scalar(value: str) -> Any:
    """Read numbers, booleans and null as YAML; keep anything else as the string given."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return value if isinstance(parsed, dict | list) else parsed


def _set(raw: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = raw
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _problems(exc: ValidationError, origins: dict[tuple[str, ...], str]) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(part) for part in error["loc"])
        message = _describe(error, loc)
        origin = next((var for path, var in origins.items() if loc[: len(path)] == path), None)
        if origin:
            message += f" (from environment variable {origin})"
        problems.append((".".join(loc), message))
    return problems


def _describe(error: Any, loc: tuple[str, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        expected = _allowed_keys(loc[:-1])
        return "unknown key" + (f"; expected one of: {', '.join(expected)}" if expected else "")
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "missing" or (loc and loc[-1] in _SECRET_FIELDS):
        return message
    value = error.get("input")
    if isinstance(value, dict | list):
        return message
    shown = repr(value)
    return f"{message} (got {shown})" if len(shown) <= 60 else message


def _allowed_keys(loc: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] | None = AppConfig
    for part in loc:
        if model is None:
            break
        field = model.model_fields.get(part)
        if field is not None:
            model = _inner_model(field.annotation)
        # otherwise the part is a list index or a dict key (an exchange name): same model
    return sorted(model.model_fields) if model else []


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
