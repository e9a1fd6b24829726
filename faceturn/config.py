"""Typed dataclass configs: read from TOML, overridden with `--set key=value`, saved as JSON beside every result.

Configs are data (TOML via stdlib `tomllib`), never executed code. Overrides are type-checked against the field's
declared type, so `--set model.n_layers=two` fails with a message naming the key instead of training a broken model.
Nested dataclasses are addressed with dots (`train.lr=3e-4`).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass; the message names the key."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a TOML/JSON value (or an override string already parsed) to the declared field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for a in args:
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} does not fit {tp}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        return origin(_coerce(v, inner, key) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: cannot read {value!r} as {tp}")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys are an error naming the key and the valid ones."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!r} for {cls.__name__}; valid keys: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{cls.__name__}: {e}") from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a (nested) dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _parse_override(text: str) -> Any:
    """Parse the value side of `key=value` as a TOML value when possible (numbers, bools, lists), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """Return a copy of `cfg` with `a.b=value` overrides applied, each checked against the field's type."""
    data = dataclasses.asdict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node, cls = data, type(cfg)
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"unknown config key {key!r}")
            cls = _hints(cls)[p]
            node = node[p]
        last = parts[-1]
        if last not in node:
            valid = sorted(node)
            raise ConfigError(f"unknown config key {key!r}; valid keys here: {valid}")
        node[last] = _coerce(_parse_override(raw.strip()), _hints(cls)[last], key)
    return from_dict(type(cfg), data)


def load_toml(cls: type[T], path: str | Path, overrides: Iterable[str] = ()) -> T:
    """Read a TOML file (or a `.json` file as `save_json` writes it) into `cls`, then apply overrides. Errors name
    the file."""
    path = Path(path)
    is_json = path.suffix == ".json"
    try:
        data = json.loads(path.read_text()) if is_json else tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if is_json else 'TOML'} ({e})") from None
    try:
        cfg = from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return apply_overrides(cfg, overrides)


def save_json(cfg: Any, path: str | Path) -> None:
    """Write a config as pretty JSON atomically (temporary name, then rename)."""
    from faceturn.io import atomic_write_text

    atomic_write_text(Path(path), json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")


def config_names(config_dir: Path) -> list[str]:
    """Names of the TOML configs shipped in a folder (file stems, sorted)."""
    return sorted(p.stem for p in Path(config_dir).glob("*.toml"))


def named_or_path(name_or_path: str | Path, config_dir: Path, kind: str) -> Path:
    """The TOML file for a shipped config name (e.g. `tiny`) or a path given as is (any `.toml` or `.json` file, see
    `load_toml`); an unknown name lists the valid ones."""
    path = Path(name_or_path)
    if path.suffix not in (".toml", ".json") and len(path.parts) == 1:
        names = config_names(config_dir)
        if str(name_or_path) not in names:
            raise ConfigError(f"unknown {kind} {str(name_or_path)!r}; named configs: {names}")
        path = Path(config_dir) / f"{name_or_path}.toml"
    return path
