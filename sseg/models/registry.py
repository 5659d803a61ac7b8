"""Model registry: ``create_model(name, config)`` builds any model a checkpoint can name.

Every model family registers its name, its typed config class and a builder. A checkpoint stores the
model name and config, so one loader (:func:`sseg.checkpoints.model_from_checkpoint`) rebuilds any
kind. Named configs (``model_configs/<name>.json``, in the spirit of open_clip's ``model_configs/``)
give ready sizes: ``sseg_tiny`` (the CPU demo) and ``sseg_swin_s`` (the paper's).
"""

from __future__ import annotations

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


def register_model(name: str, config_class: type[BaseModel], builder: Callable[[Any], nn.Module],
                   segments: bool = True) -> None:
    _REGISTRY[name] = ModelEntry(config_class, builder, segments)


def _ensure_builtin() -> None:
    if "sseg" not in _REGISTRY:
        from sseg.models.config import ModelConfig
        from sseg.models.sseg_model import SSegModel

        register_model("sseg", ModelConfig, SSegModel, segments=True)
    if "semivl" not in _REGISTRY:
        from sseg.semivl.config import SemiVLModelConfig
        from sseg.semivl.model import SemiVLModel

        register_model("semivl", SemiVLModelConfig, SemiVLModel, segments=True)
    if "upernet_vit" not in _REGISTRY:  # S-Seg+ (closed vocabulary over its config's class_names)
        from sseg.models.upernet import UperNetConfig, UperNetViT

        register_model("upernet_vit", UperNetConfig, UperNetViT, segments=True)


def model_entry(name: str) -> ModelEntry:
    _ensure_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}' (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def model_names() -> list[str]:
    _ensure_builtin()
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
