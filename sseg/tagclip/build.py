"""Building a TagCLIP model from its VLM's weights: our S-Seg checkpoint or a local CLIP file."""

from __future__ import annotations

from sseg.tagclip.config import TagCLIPModelConfig


def vlm_model_config(model_config: dict, vlm_checkpoint: str | None) -> tuple[dict, object | None]:
    """The model config completed from the VLM's weights, and what was read: for ``vlm="sseg"`` the S-Seg
    checkpoint's state (its model config becomes ``sseg``); for ``vlm="clip"`` the CLIP weights (OpenAI's
    release selects the QuickGELU architecture). ``vlm_checkpoint=None``: random init (tests, dry runs)."""
    config = dict(model_config)
    if vlm_checkpoint is None:
        return config, None
    if config.get("vlm", "sseg") == "sseg":
        from sseg.checkpoints import load_checkpoint, upgrade_model_config

        state = load_checkpoint(vlm_checkpoint, kinds=["sseg-pretrain"])
        config["sseg"] = upgrade_model_config("sseg", state["model_config"], str(vlm_checkpoint))
        return config, state
    from sseg.clip_weights import clip_architecture, read_clip_weights

    weights = read_clip_weights(vlm_checkpoint)
    name, cfg = clip_architecture(config.get("clip_model", "ViT-B-16"), config.get("clip_model_cfg"), weights)
    config["clip_model"], config["clip_model_cfg"] = name, cfg
    return config, weights


def vlm_embed_dim(config: dict, loaded: object | None) -> int | None:
    """The embedding size of the VLM weights that were read (None for random init)."""
    if loaded is None:
        return None
    if config.get("vlm", "sseg") == "sseg":
        return int(config["sseg"].get("embed_dim", 0))
    proj = loaded.state.get("visual.proj")
    return int(proj.shape[1]) if proj is not None else None


def build_tagclip_model(model_config: dict, loaded: object | None):
    """The TagCLIP model (random decoder) with the VLM weights ``loaded`` by :func:`vlm_model_config`."""
    from sseg.tagclip.model import TagCLIPModel

    model = TagCLIPModel(TagCLIPModelConfig.model_validate(model_config))
    if loaded is None:
        return model
    if model_config.get("vlm", "sseg") == "sseg":
        model.vlm.load_pretrained(loaded["model"])
    else:
        model.vlm.load_pretrained(loaded.state)
    return model



def with_model_fields(checkpoint: str, out_dir, **fields) -> str:
    """A copy of a TagCLIP checkpoint whose model config has ``fields`` changed (an inference setting such
    as ``inference_weighting``; the weights are the same). Returns the new checkpoint's directory."""
    from pathlib import Path

    import torch

    from sseg.checkpoints import CHECKPOINT_FILE, load_checkpoint

    state = load_checkpoint(checkpoint, kinds=["tagclip"])
    state["model_config"] = TagCLIPModelConfig.model_validate({**state["model_config"], **fields}).model_dump(mode="json")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / CHECKPOINT_FILE)
    return str(out)
