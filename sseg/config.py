"""Typed job configs: pydantic models loaded from YAML and overridden from the command line.

Overrides are ``dotted.key=value`` words; values are parsed as YAML scalars/lists
(``train.lr=1e-3``, ``data.shards=[a,b]``). Any problem becomes a :class:`ConfigError` whose
message is one line naming the field and, where the field is a choice, the allowed values.
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sseg.errors import ConfigError, first_line

T = TypeVar("T", bound="StrictModel")


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _field_choices(model: type[BaseModel], loc: Sequence[Any]) -> list[str] | None:
    """Allowed values of a Literal field at ``loc`` (for the error message), if it is one."""
    current: Any = model
    annotation = None
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return sorted(current.model_fields)
        annotation = field.annotation
        current = annotation
    if annotation is not None and typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return None


def _one_line(model: type[BaseModel], err: ValidationError) -> str:
    first = err.errors()[0]
    loc = [p for p in first["loc"] if not isinstance(p, int)]
    name = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        parent = loc[:-1]
        allowed = _field_choices(model, parent + ["__missing__"]) if parent else sorted(model.model_fields)
        return f"unknown config field '{name}' (known fields here: {', '.join(allowed or [])})"
    choices = _field_choices(model, loc)
    value = first.get("input")
    msg = f"config field '{name}': {first['msg']} (got {value!r})"
    if choices and first["type"] in ("literal_error", "enum"):
        msg = f"config field '{name}' must be one of {', '.join(choices)} (got {value!r})"
    more = len(err.errors()) - 1
    return msg + (f"; and {more} more problem(s)" if more else "")


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(words: Sequence[str]) -> dict:
    tree: dict = {}
    for word in words:
        if "=" not in word:
            raise ConfigError(f"config override '{word}' must look like section.field=value")
        key, raw = word.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``cls`` from its defaults, then the YAML file at ``path``, then ``overrides``.

    Each layer is merged field by field into the one below, so a partial section (``train.steps=20``)
    keeps the other fields of that section's default rather than the section class's own defaults.
    """
    data = cls().model_dump(mode="python")
    if path:
        data = _merge(data, read_yaml(path))
    data = _merge(data, parse_overrides(overrides))
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_one_line(cls, err)) from None


def config_hash(config: BaseModel | dict) -> str:
    payload = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def flatten(config: BaseModel | dict, prefix: str = "") -> dict[str, Any]:
    """``{"train.lr": 5e-4, ...}`` for MLflow params (names line up across runs and stages)."""
    tree = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
