"""Typed, validated configs built from YAML presets plus dotted ``key=value`` overrides.

Every config is a dataclass; :func:`from_dict` builds one from plain data, checking every key and
type and naming the full dotted path of anything wrong (``ppo.clip_ratio: expected float, got
'high'``). Dataclasses validate their own value ranges in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-6`` as a string; configs mean a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names where and what was expected."""


def from_dict(cls: type, data: Mapping[str, Any] | None, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data`` (missing keys take their defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted((k for k in data if k not in fields), key=str)
    if unknown:
        raise ConfigError(_unknown_keys_message(unknown, path, fields))
    kwargs = {
        name: _coerce(hints[name], data[name], _join(path, name)) for name in fields if name in data
    }
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        message = _name_the_key(str(e), path, fields) or f"{path or cls.__name__}: {e}"
        raise ConfigError(message) from None


def _unknown_keys_message(unknown: Sequence[Any], path: str, fields: Mapping[str, Any]) -> str:
    """``unknown key rollout.grup_size; did you mean rollout.group_size?`` (the section's closest
    field names), else the section's fields."""
    names = []
    guesses = []
    for key in unknown:
        names.append(_join(path, str(key)))
        close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
        guesses.append(_join(path, close[0]) if close else None)
    if len(unknown) == 1 and guesses[0]:
        return f"unknown key {names[0]}; did you mean {guesses[0]}?"
    listed = ", ".join(
        name if guess is None else f"{name} (did you mean {guess}?)"
        for name, guess in zip(names, guesses, strict=True)
    )
    where = f"{path}: " if path else ""
    return (
        f"unknown key{'s' if len(unknown) > 1 else ''} {listed}; {where}expected some of "
        f"{', '.join(sorted(fields))}"
    )


def _name_the_key(message: str, path: str, fields: Mapping[str, Any]) -> str | None:
    """``"tasks must be ..."`` (or ``"eval.tasks must be ..."``) raised by section ``path``'s
    ``__post_init__`` as ``"eval.tasks: must be ..."``: the dotted key the user typed; None when
    the message does not start with one of the section's fields."""
    if path and message.startswith(f"{path}."):
        message = message[len(path) + 1 :]
    name, sep, rest = message.partition(" must ")
    if not sep or name not in fields:
        return None
    return f"{_join(path, name)}: must {rest}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(opt, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{path}: no accepted type fits {value!r}"
        )
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: expected one of {list(allowed)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        return from_dict(tp, value, path)
    if origin in (tuple, list, Sequence):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = get_args(tp)
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    return value


def to_dict(cfg: Any) -> Any:
    """Plain data (tuples as lists) for YAML/JSON dumps."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to nested plain data."""
    out = yaml_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = yaml_load(raw) if raw.strip() else None
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} is not a file (expected a YAML file)")
    try:
        data = yaml_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:  # a binary file, or text in another encoding
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text (byte {e.start}); expected a YAML file"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    return data
