"""Real CLIP weight files (issue 24, defect 3): OpenAI's TorchScript release, open_clip state dicts and
open_clip training checkpoints load into the right architecture; anything else is a one-line error.

The files are random-init models of the real architecture (open_clip ViT-B/16), saved once per session:

* ``openai.pt``: a TorchScript archive made by ``torch.jit.trace_module`` of open_clip's
  ``ViT-B-16-quickgelu`` with fp16 weights and OpenAI's three extra state-dict entries
  (``input_resolution``, ``context_length``, ``vocab_size``) registered as buffers. OpenAI's released
  ``ViT-B-16.pt`` is such an archive with that state-dict key layout; ours is traced from open_clip's module,
  not from OpenAI's code, so its TorchScript code differs (the loader only reads the state dict).
* ``open_clip.pt``: ``torch.save(model.state_dict())`` of open_clip's ``ViT-B-16`` (GELU).
* ``open_clip_epoch.pt``: the layout of open_clip's training script checkpoints
  (``{"epoch", "name", "state_dict"}`` with DistributedDataParallel's ``module.`` prefix).
"""

from __future__ import annotations

import pytest
import torch

from sseg.errors import CheckpointError

open_clip = pytest.importorskip("open_clip")

from paper_weights import OPENAI_EXTRA  # noqa: E402 - after the importorskip


@pytest.fixture(scope="session")
def clip_files(tmp_path_factory, openai_clip_archive):
    import sseg._compat  # noqa: F401 - torchvision fix before open_clip

    out = tmp_path_factory.mktemp("clip_weights")
    state = openai_clip_archive["state"]  # OpenAI's file of these weights: the session's archive
    gelu = open_clip.create_model("ViT-B-16").eval()
    gelu.load_state_dict(state)
    torch.save(state, out / "open_clip.pt")
    torch.save({"epoch": 32, "name": "laion-run", "state_dict": {f"module.{k}": v for k, v in state.items()}},
               out / "open_clip_epoch.pt")

    (out / "openai.pt").symlink_to(openai_clip_archive["path"])  # the session's file, not a 300 MB copy
    # the references: the same weights (fp16-rounded for OpenAI's file) in each activation
    reference_quick = open_clip.create_model("ViT-B-16-quickgelu").eval()
    reference_quick.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in state.items()})
    return {"dir": out, "gelu": gelu, "quick": reference_quick, "state": state}


def _image() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def _activations(model) -> set[str]:
    return {type(m).__name__ for m in model.modules() if type(m).__name__ in ("GELU", "QuickGELU")}


def _loaded(path, configured="ViT-B-16"):
    from sseg.clip_weights import clip_architecture
    from sseg.semivl.vlm import ClipVLM, read_clip_weights

    weights = read_clip_weights(str(path))
    name, cfg = clip_architecture(configured, None, weights)
    vlm = ClipVLM(name, cfg).eval()
    vlm.load_pretrained(weights.state)
    return weights, name, vlm


def test_openai_torchscript_archive_builds_the_quickgelu_clip(clip_files):
    from sseg.semivl.vlm import read_clip_state

    path = clip_files["dir"] / "openai.pt"
    state = read_clip_state(str(path))  # today: refused ("cannot use weights_only=True with TorchScript")
    assert not set(OPENAI_EXTRA) & set(state) and "visual.proj" in state
    weights, name, vlm = _loaded(path)
    assert weights.origin == "openai" and name == "ViT-B-16-quickgelu"
    assert _activations(vlm.clip) == {"QuickGELU"}
    with torch.no_grad():
        got, want = vlm.clip.encode_image(_image()), clip_files["quick"].encode_image(_image())
        gelu = clip_files["gelu"].encode_image(_image())
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, gelu, atol=1e-3)  # the GELU build of the same weights is another model


def test_open_clip_state_dict_keeps_the_configured_activation(clip_files):
    path = clip_files["dir"] / "open_clip.pt"
    weights, name, vlm = _loaded(path)
    assert weights.origin == "open_clip" and name == "ViT-B-16" and _activations(vlm.clip) == {"GELU"}
    with torch.no_grad():
        assert torch.equal(vlm.clip.encode_image(_image()), clip_files["gelu"].encode_image(_image()))
    # open_clip's convention: a model trained with QuickGELU is named "...-quickgelu"
    _, name, vlm = _loaded(path, "ViT-B-16-quickgelu")
    assert name == "ViT-B-16-quickgelu" and _activations(vlm.clip) == {"QuickGELU"}


def test_open_clip_training_checkpoint_with_module_prefix(clip_files):
    from sseg.semivl.vlm import read_clip_state

    state = read_clip_state(str(clip_files["dir"] / "open_clip_epoch.pt"))
    assert set(state) == set(clip_files["state"])  # today: keys keep "module." (the run's check refuses them)
    weights, name, vlm = _loaded(clip_files["dir"] / "open_clip_epoch.pt")
    assert weights.origin == "open_clip" and name == "ViT-B-16"
    with torch.no_grad():
        assert torch.equal(vlm.clip.encode_image(_image()), clip_files["gelu"].encode_image(_image()))


def _dino_vit_state() -> dict:
    """The key layout of DINO's released ViT checkpoints (a flat timm-style ViT state dict), tiny."""
    return {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8),
            "patch_embed.proj.weight": torch.zeros(8, 3, 16, 16), "patch_embed.proj.bias": torch.zeros(8),
            "blocks.0.attn.qkv.weight": torch.zeros(24, 8), "norm.weight": torch.ones(8)}


@pytest.mark.parametrize("case", ["dino", "dino_teacher", "truncated", "text", "empty_zip"])
def test_a_wrong_file_is_a_one_line_checkpoint_error(case, clip_files, tmp_path):
    from sseg.semivl.vlm import read_clip_state

    path = tmp_path / f"{case}.pth"
    if case == "dino":
        torch.save(_dino_vit_state(), path)
    elif case == "dino_teacher":
        torch.save({"teacher": _dino_vit_state(), "student": _dino_vit_state(), "epoch": 100}, path)
    elif case == "truncated":
        data = (clip_files["dir"] / "openai.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "text":
        path.write_text("not a checkpoint\n")
    else:
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/readme.txt", "hello")
    with pytest.raises(CheckpointError) as info:
        read_clip_state(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    if case.startswith("dino"):
        assert "not a CLIP" in message


def test_openai_weights_on_a_model_without_a_quickgelu_variant_is_a_config_error(clip_files):
    from sseg.clip_weights import clip_architecture
    from sseg.errors import ConfigError
    from sseg.semivl.vlm import read_clip_weights

    weights = read_clip_weights(str(clip_files["dir"] / "openai.pt"))
    with pytest.raises(ConfigError, match="QuickGELU"):
        clip_architecture("ViT-B-16-SigLIP", None, weights)
    assert clip_architecture("ViT-B-16", {"embed_dim": 8}, weights) == ("ViT-B-16", {"embed_dim": 8,
                                                                                      "quick_gelu": True})


def test_the_semivl_run_builds_the_activation_of_the_weights(clip_files, tiny_world):
    """pipelines.runs.semivl.prepare puts the architecture picked from the weights into the model config
    (the SemiVL checkpoint rebuilds the model from it)."""
    from pipelines.runs.semivl import prepare
    from schemas.configs import SemiVLConfig

    def config(path):
        return SemiVLConfig.model_validate({
            "world": None, "data": {"dataset": "world", "root": str(tiny_world / "voc"), "num_labeled": 4,
                                    "templates": "single", "concepts": None},
            "vlm": {"kind": "clip", "clip_model": "ViT-B-16", "checkpoint": str(path), "embed_dim": 512}})

    assert prepare(config(clip_files["dir"] / "openai.pt")).model_config["clip_model"] == "ViT-B-16-quickgelu"
    assert prepare(config(clip_files["dir"] / "open_clip_epoch.pt")).model_config["clip_model"] == "ViT-B-16"
