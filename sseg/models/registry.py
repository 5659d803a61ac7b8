"""Model registry: ``create_model(name, config)`` builds any model a checkpoint can name.

A model registers itself where it is defined, as timm's ``register_model``::

    @register_model("sseg", ModelConfig)
    class SSegModel(nn.Module): ...

(its name, its typed config class, the builder: the class). The registry imports the modules that define
models (:data:`MODEL_MODULES`) the first time a name is looked up, so it imports none of them itself and
a model module may import the registry. A checkpoint stores the model name and config, so one loader
(:func:`sseg.checkpoints.model_from_checkpoint`) rebuilds any kind. Named configs (``model_configs/<name>.json``, in the spirit of open_clip's ``model_configs/``)
give ready sizes: ``sseg_tiny`` (the CPU demo) and ``sseg_swin_s`` (the paper's).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel
from torch import nn

from sseg.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"


@dataclass(frozen=True)
class ModelEntry:
    config_class: type[BaseModel]
    builder: Callable[[Any], nn.Module]
    segments: bool  # the model maps (image, class names) to a label map: segment/evaluate accept it


_REGISTRY: dict[str, ModelEntry] = {}
# Modules that register models when imported; a new model family adds its module here.
MODEL_MODULES: tuple[str, ...] = ("sseg.models.sseg_model", "sseg.models.upernet", "sseg.semivl.model",
                                   "sseg.tagclip.model")
_imported = False


def register_model(name: str, config_class: type[BaseModel], builder: Callable[[Any], nn.Module] | None = None,
                   segments: bool = True):
    """Register ``name``: ``builder(config)`` builds it from its ``config_class``. Without ``builder`` it is a
    class decorator (the class is the builder). ``segments``: the model maps (image, class names) to a label
    map (:class:`sseg.segmenting.SegmentingModel`), so segment/evaluate accept it."""
    if builder is None:
        def decorate(cls):
            _REGISTRY[name] = ModelEntry(config_class, cls, segments)
            return cls

        return decorate
    _REGISTRY[name] = ModelEntry(config_class, builder, segments)
    return builder


def _import_model_modules() -> None:
    global _imported
    if not _imported:
        for module in MODEL_MODULES:
            importlib.import_module(module)
        _imported = True


def model_entry(name: str) -> ModelEntry:
    _import_model_modules()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}' (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def model_names() -> list[str]:
    _import_model_modules()
    return sorted(_REGISTRY)


def validate_model_config(name: str, config: dict | BaseModel) -> BaseModel:
    entry = model_entry(name)
    if isinstance(config, entry.config_class):
        return config
    if isinstance(config, BaseModel):
        config = config.model_dump(mode="json")
    return entry.config_class.model_validate(config)


def create_model(name: str, config: dict | BaseModel) -> nn.Module:
    """The model ``name`` built from its config (a dict or the typed config), randomly initialised."""
    return model_entry(name).builder(validate_model_config(name, config))


def named_model_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_model_config(config_name: str) -> tuple[str, dict]:
    """(model name, config dict) of a named config, e.g. ``sseg_tiny``."""
    path = CONFIG_DIR / f"{config_name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown model config '{config_name}' (known: {', '.join(named_model_configs())})")
    data = json.loads(path.read_text())
    return data["model"], data["config"]
