"""The S-Seg VLM's *dense* zero-shot on a TagCLIP split beside its own (mask-level) inference: the patch
embeddings TagCLIP's decoder reads, cosine to the class names × the VLM's logit scale, softmax over the names —
what ``model.zero_shot_ensemble`` mixes in. No Ray, one thread; prints one JSON line per inference.

    python research/tagclip_dense_zero_shot.py vlm.checkpoint=<S-Seg run id> [data.split=world_b]
"""

from __future__ import annotations

import copy
import json
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import sseg  # noqa: E402,F401
from pipelines.cli import job_parser, parse_job_config  # noqa: E402
from pipelines.evaluation.tagclip import segment_settings, text_classes  # noqa: E402
from pipelines.inputs.tagclip import prepare  # noqa: E402
from schemas.configs import TagCLIPConfig  # noqa: E402
from sseg.checkpoints import model_from_checkpoint  # noqa: E402
from sseg.data.datasets import build_dataset  # noqa: E402
from sseg.inference import SegmentConfig, Segmenter  # noqa: E402
from sseg.metrics import ConfusionMatrix  # noqa: E402
from sseg.semivl.vlm import SSegVLM  # noqa: E402
from sseg.tagclip.evaluation import seen_unseen_metrics  # noqa: E402
from sseg.tagclip.scores import dense_zero_shot  # noqa: E402


def dense_scores(self, images: torch.Tensor, classifier) -> torch.Tensor:
    """``segment_scores`` of the VLM's dense zero-shot (bound to a copy of the S-Seg model)."""
    patches = SSegVLM.dense(types.SimpleNamespace(model=self), images)[0]
    p = F.interpolate(dense_zero_shot(patches, classifier.embeddings.to(patches), float(self.current_logit_scale())),
                      size=images.shape[-2:], mode="bilinear", align_corners=False)
    out = p.new_zeros(p.shape[0], classifier.num_classes, *p.shape[-2:])
    return out.index_add_(1, classifier.concept_to_class.to(p.device), p)


def main() -> None:
    torch.set_num_threads(1)
    cfg = parse_job_config(TagCLIPConfig, job_parser(__doc__.splitlines()[0]).parse_args())
    prep = prepare(cfg)
    if cfg.vlm.kind != "sseg" or not prep.vlm_checkpoint:
        raise SystemExit("the dense zero-shot needs an S-Seg VLM")
    model, _ = model_from_checkpoint(prep.vlm_checkpoint)
    model.eval()
    dense = copy.deepcopy(model)
    dense.segment_scores = types.MethodType(dense_scores, dense)
    names, _ = text_classes(prep.split)
    settings = SegmentConfig.model_validate(segment_settings(cfg))
    segmenters = {"own": Segmenter.for_classes(model, names, settings),
                  "dense": Segmenter.for_classes(dense, names, settings)}
    data = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.val_split)
    confusion = {k: ConfusionMatrix(len(prep.class_names)) for k in segmenters}
    with torch.no_grad():
        for i in range(len(data)):
            _, image, label = data[i]
            for k, segmenter in segmenters.items():
                confusion[k].update(segmenter.predict(image, return_scores=False).labels, label)
    for k, cm in confusion.items():
        m = seen_unseen_metrics(cm, prep.split)
        print(json.dumps({"inference": k, **{x: round(float(m[x]), 4) for x in
                                              ("miou_seen", "miou_unseen", "hiou", "pixel_accuracy", "unseen_as_seen")}}))


if __name__ == "__main__":
    main()
