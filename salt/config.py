"""Typed configs: dataclasses, layered from YAML files and `key=value` overrides.

One override path for every entry point. Unknown keys and wrong types are errors that name the dotted
key, raised before any expensive work starts (nanoGPT's configurator / dinov2's layered configs, made strict).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or an invalid value."""


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Return `value` converted to `annotation`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {annotation.__name__}, got {value!r}")
        return _build(annotation, value, key)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_type, value_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, key_type, key): _coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} matches none of {annotation}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected a bool (true/false), got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an int, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):   # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a float, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {annotation}")


def _build(cls: type, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = prefix or cls.__name__
        raise ConfigError(f"unknown config key {'.'.join(filter(None, [prefix, unknown[0]]))!r} "
                          f"(valid keys under {where!r}: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from e


def _deep_update(target: dict, updates: dict) -> None:
    for k, v in updates.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            _deep_update(target[k], v)
        else:
            target[k] = v


def parse_override(text: str) -> dict:
    """`a.b.c=value` -> {"a": {"b": {"c": value}}}; the value is parsed as YAML (so 3, 1e-3, true, [1, 2])."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    value = yaml.safe_load(raw) if raw != "" else ""
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    includes = data.pop("base", None)
    merged: dict = {}
    for inc in ([includes] if isinstance(includes, str) else includes or []):
        _deep_update(merged, load_yaml(path.parent / inc))
    _deep_update(merged, data)
    return merged


def load_config(cls: type, files: list[str | Path] = (), overrides: list[str] = ()):
    """Defaults of `cls`, then each YAML file in order (a file may name `base: other.yaml`), then overrides.

    Layers are merged as plain mappings and validated once, so cross-field checks see the final values."""
    values = dataclasses.asdict(cls())
    for f in files:
        _deep_update(values, load_yaml(f))
    for o in overrides:
        _deep_update(values, parse_override(o))
    return _build(cls, values)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def with_overrides(cfg, overrides: list[str]):
    """A resolved config with `key=value` overrides applied, validated again as a whole."""
    values = to_dict(cfg)
    for text in overrides:
        _deep_update(values, parse_override(text))
    return from_dict(type(cfg), values)


def from_dict(cls: type, values: dict):
    """Build `cls` from a nested mapping (e.g. a config stored in a checkpoint), with the same checks."""
    return _build(cls, values)


PACKAGED_CONFIGS = Path(__file__).parent / "configs"


def resolve_config(name: str | Path) -> Path:
    """A YAML path, or the name of a packaged config (salt/configs/NAME.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = PACKAGED_CONFIGS / f"{name}.yaml"
    if packaged.is_file():
        return packaged
    available = ", ".join(sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml")))
    raise ConfigError(f"config {name!r} is neither a file nor a packaged config (packaged: {available})")
