"""Typed dataclass configs: read from TOML, overridden with `--set key=value`, saved as JSON beside every result.

Configs are data (TOML via stdlib `tomllib`), never executed code. A field is set the same way from a TOML table, a
`--set a.b=value` override (applied to the raw table before the dataclass is built) and Python
(`dataclasses.replace`). Values are type-checked against the field's declared type, so `--set model.num_layers=two`
fails with a message naming the key instead of training a broken model.

Two hooks let a dataclass resolve names in its raw table before it is built: a classmethod `resolve_raw(data) ->
data` (a train config's `inherit = "aux"`, a model's `shape = "tiny"`), and a class attribute `reset_on_set`
(`{key: fields}`): setting `key` by an override drops those fields first, so `resolve_raw` fills them anew (setting
`model.shape` replaces every shape field).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from faceturn.errors import ConfigError
from faceturn.io import atomic_write_text

T = TypeVar("T")
__all__ = [
    "ConfigError",
    "apply_overrides",
    "from_dict",
    "load_config",
    "load_toml",
    "read_raw",
    "save_json",
    "to_dict",
]


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
    resolve = getattr(cls, "resolve_raw", None)
    if resolve is not None:
        data = resolve(dict(data))
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


def override_raw(cls: type, data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides to the raw table `data` of dataclass `cls` (a copy is returned). Keys are checked
    against the dataclass fields here, values when the dataclass is built (`from_dict`)."""
    data = copy.deepcopy(dict(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node, node_cls = data, cls
        for i, p in enumerate(parts):
            names = {f.name for f in dataclasses.fields(node_cls) if f.init}
            if p not in names:
                where = ".".join(parts[:i]) or "the top level"
                raise ConfigError(f"unknown config key {key.strip()!r}; valid keys at {where}: {sorted(names)}")
            if i == len(parts) - 1:
                for dropped in getattr(node_cls, "reset_on_set", {}).get(p, ()):
                    node.pop(dropped, None)
                node[p] = _parse_override(raw.strip())
                break
            inner = _hints(node_cls)[p]
            inner = next((a for a in typing.get_args(inner) if dataclasses.is_dataclass(a)), inner)
            if not dataclasses.is_dataclass(inner):
                raise ConfigError(f"config key {key.strip()!r}: {'.'.join(parts[: i + 1])} is not a table")
            child = node.get(p)
            node[p] = child = dict(child) if isinstance(child, Mapping) else {}
            node, node_cls = child, inner
    return data


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """Return a copy of `cfg` with `a.b=value` overrides applied, each checked against the field's type."""
    return from_dict(type(cfg), override_raw(type(cfg), to_dict(cfg), overrides))


def read_raw(path: str | Path) -> dict[str, Any]:
    """The raw table of a TOML file (or a `.json` file as `save_json` writes it); errors name the file."""
    path = Path(path)
    is_json = path.suffix == ".json"
    try:
        return json.loads(path.read_text()) if is_json else tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if is_json else 'TOML'} ({e})") from None


def load_toml(cls: type[T], path: str | Path, overrides: Iterable[str] = ()) -> T:
    """Read a TOML file (or a `.json` file as `save_json` writes it) into `cls`, overrides applied to its raw table
    first (so they take part in name resolution: `--set model.shape=small`). Errors name the file."""
    try:
        return from_dict(cls, override_raw(cls, read_raw(path), overrides))
    except ConfigError as e:
        if str(e).startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {e}") from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """`cls` from a TOML/JSON file when one is given, else from its defaults; `--set` overrides applied either way."""
    if path is not None:
        return load_toml(cls, path, overrides)
    return from_dict(cls, override_raw(cls, {}, overrides))


def save_json(cfg: Any, path: str | Path) -> None:
    """Write a config as pretty JSON atomically (temporary name, then rename)."""
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
