"""Typed configs: YAML + dotted overrides, one-line errors naming the field, exit code 2 from jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from schemas.configs import PretrainConfig, PseudoMaskJobConfig
from sseg.config import flatten, load_config, parse_overrides
from sseg.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_overrides_keep_other_defaults_of_the_section():
    cfg = load_config(PretrainConfig, None, ["train.steps=20", "model.num_queries=8"])
    assert cfg.train.steps == 20
    assert cfg.train.global_batch_size == PretrainConfig().train.global_batch_size  # demo default kept
    assert cfg.model.num_queries == 8 and cfg.model.backbone == "tiny_convnet"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.01\n  betas: [0.8, 0.9]\nworld: null\n")
    cfg = load_config(PretrainConfig, path, ["train.lr=0.02"])
    assert cfg.train.lr == 0.02 and cfg.train.betas == (0.8, 0.9) and cfg.world is None


def test_paper_config_loads_with_paper_sizes():
    cfg = load_config(PretrainConfig, ROOT / "configs" / "sseg_cc12m.yaml")
    assert cfg.model.backbone == "swin_small_patch4_window7_224"
    assert (cfg.model.num_queries, cfg.model.dec_layers, cfg.model.hidden_dim) == (64, 6, 256)
    assert (cfg.model.text_layers, cfg.model.text_width, cfg.model.context_length) == (12, 256, 77)
    assert cfg.train.global_batch_size == 4096 and cfg.train.lr == 5e-4 and cfg.train.weight_decay == 0.05
    assert cfg.pseudo_masks.generator == "dino" and cfg.pseudo_masks.num_segments == 8


@pytest.mark.parametrize("override, expected", [
    (["train.lr=abc"], "config field 'train.lr'"),
    (["train.bogus=1"], "unknown config field 'train.bogus'"),
    (["pseudo_masks.generator=sam"], "must be one of pixel, dino"),
    (["model.mask_feature_source=cls"], "must be one of query, pooled"),
    (["train.steps=-3"], "config field 'train.steps'"),
    (["train"], "must look like section.field=value"),
    (["train.weight_words=1", "data.text=caption"], "train.weight_words > 0 needs data.text=words"),
])
def test_errors_are_one_line_and_name_the_field(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, None, override)
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(PseudoMaskJobConfig, tmp_path / "nope.yaml")


def test_parse_overrides_types():
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "d=null", "e=text", "f=0.5"]) == {
        "a": {"b": 1, "c": [1, 2]}, "d": None, "e": "text", "f": 0.5}
    # YAML reads "1e-3" as a string; the typed field still gets a float
    assert load_config(PretrainConfig, None, ["train.lr=1e-3"]).train.lr == 1e-3


def test_flatten_names_line_up_with_sections():
    flat = flatten(PretrainConfig())
    assert "train.lr" in flat and "model.num_queries" in flat and "data.image_size" in flat


def test_job_exits_2_with_one_line_and_writes_nothing(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "pretrain.py"), "train.lr=fast"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: config field 'train.lr': Input should be a valid "
                                                "number, unable to parse string as a number (got 'fast')"]
    assert list(tmp_path.iterdir()) == []  # no world, no mlflow.db, no runs


def test_first_line_of_an_error():
    from sseg.errors import first_line

    assert first_line(ValueError("bad value\nmore detail")) == "bad value"
    assert first_line(ValueError("  \n  indented\n")) == "indented"
    assert first_line(KeyError()) == "KeyError" and first_line(OSError("")) == "OSError"
