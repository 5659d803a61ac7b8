"""Config schemas of the jobs. Every section is a StrictModel: unknown keys and bad values are errors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from sseg.config import StrictModel
from sseg.data.world import WorldConfig
from sseg.models.config import ModelConfig
from sseg.pseudo_masks.generator import PseudoMaskConfig


class RayConfig(StrictModel):
    address: str | None = None  # None: RAY_ADDRESS (set by `ray job submit`) or a local instance
    num_cpus: int | None = Field(default=None, gt=0)


class TrackingConfig(StrictModel):
    experiment: str = "sseg"
    run_name: str | None = None
    parent_run_id: str | None = None  # lineage: the run this stage starts from


class DataConfig(StrictModel):
    shards: str | list[str] = "data/world/shards"  # dir, glob, {a..b} range, list, or s3:// / gs:// URLs
    image_size: int = Field(default=224, gt=7)  # training crop / pseudo-mask resolution
    crop_scale: tuple[float, float] = (0.5, 1.0)
    read_concurrency: int | None = Field(default=None, gt=0)
    # The text the model trains on: the caption's nouns and verbs (the paper, following GroupViT) or the
    # full caption. (One word drawn per sample was measured as not learning: research/, docs/experiments.md.)
    text: Literal["words", "caption"] = "words"
    decode_batch_size: int = Field(default=64, gt=0)

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] <= 1:
            raise ValueError("crop_scale must satisfy 0 < low <= high <= 1")
        return value


class ActorPoolConfig(StrictModel):
    num_actors: int = Field(default=1, gt=0)
    gpus_per_actor: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=64, gt=0)


class PseudoMaskJobConfig(StrictModel):
    world: WorldConfig | None = WorldConfig()  # generated into world_dir if absent; null for real data
    world_dir: str = "data/world"
    data: DataConfig = DataConfig(image_size=64)
    pseudo_masks: PseudoMaskConfig = PseudoMaskConfig()
    pool: ActorPoolConfig = ActorPoolConfig()
    cache_dir: str = "data/world/pseudo_masks"
    shards_per_pass: int = Field(default=16, gt=0)
    labeled_split: str | None = "data/world/voc"  # VOC-layout split for the oracle mIoU; null to skip
    oracle_max_images: int = Field(default=500, gt=0)
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig(experiment="sseg-pseudo-masks")


class TrainConfig(StrictModel):
    global_batch_size: int = Field(default=4096, gt=0)
    steps: int | None = Field(default=None, gt=0)  # None: epochs × samples / batch
    epochs: float = Field(default=30, gt=0)
    lr: float = Field(default=5e-4, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = Field(default=2, ge=0)
    warmup_steps: int | None = Field(default=None, ge=0)  # overrides warmup_epochs
    grad_clip: float | None = Field(default=1.0, gt=0)
    bf16: Literal["auto", "on", "off"] = "auto"  # auto: bf16 autocast on GPU only
    seed: int = 0
    num_workers: int = Field(default=1, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1, gt=0)
    threads_per_worker: int | None = Field(default=None, gt=0)  # torch threads; None: cpus_per_worker
    max_failures: int = Field(default=2, ge=0)
    log_every: int = Field(default=10, gt=0)
    checkpoint_every: int = Field(default=200, gt=0)
    checkpoints_to_keep: int = Field(default=2, gt=0)
    shuffle_buffer: int = Field(default=512, ge=0)
    weight_mask: float = 1.0
    weight_contrastive: float = 1.0
    weight_focal: float = 20.0
    weight_dice: float = 1.0
    # Word-to-mask alignment (sseg.losses.word_alignment; not in the paper, 0 = the paper's loss): every
    # word of an image's training text should match one of its masks, each word prompted with a template
    # drawn from this set (the set inference uses by default).
    weight_words: float = Field(default=0.0, ge=0)
    word_templates: str | list[str] = "clip7"
    # The text feature an image is contrasted with. "sequence": the text tower reads the whole training
    # text (the paper). "word_mean": every word of the training text is encoded alone in a prompt
    # template (drawn from word_templates, as inference encodes class names) and the caption's feature is
    # the mean of its normalised word features (not in the paper; docs/experiments.md: at small scale the
    # sequence tower folds the thing words of a word list into one direction and no object is named).
    caption_feature: Literal["sequence", "word_mean"] = "sequence"


class PretrainEvalConfig(StrictModel):
    labeled_split: str | None = "data/world/voc"  # VOC-layout split; null: no evaluation
    dataset: str = "world"
    max_images: int = Field(default=500, gt=0)
    image_size: int | None = None  # None: model.image_size
    templates: str | list[str] = "clip7"  # a template-set name (clip, clip7, single, name) or a list
    retrieval_pairs: int = Field(default=256, gt=1)
    pictures: int = Field(default=8, ge=0)
    num_actors: int = Field(default=1, gt=0)


class PretrainConfig(StrictModel):
    """Defaults = the embedded CPU demo (tiny model on the captioned world); configs/ holds the paper's."""

    world: WorldConfig | None = WorldConfig()
    world_dir: str = "data/world"
    data: DataConfig = DataConfig(image_size=64)
    pseudo_mask_source: Literal["cache", "stream"] = "cache"
    pseudo_masks: PseudoMaskConfig = PseudoMaskConfig()
    pool: ActorPoolConfig = ActorPoolConfig()
    cache_dir: str = "data/world/pseudo_masks"
    model: ModelConfig = Field(default_factory=lambda: _tiny_model())
    train: TrainConfig = TrainConfig(global_batch_size=64, steps=800, lr=1e-3, warmup_steps=50,
                                     threads_per_worker=2, checkpoint_every=200,
                                     caption_feature="word_mean")
    eval: PretrainEvalConfig = PretrainEvalConfig()
    storage_path: str = "runs"
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig(experiment="sseg-pretrain")

    @model_validator(mode="after")
    def _words_need_word_text(self) -> "PretrainConfig":
        if self.train.weight_words > 0 and self.data.text == "caption":
            raise ValueError("train.weight_words > 0 needs data.text=words (the alignment "
                             "labels are the training text's words; a full caption's are mostly stop words)")
        if self.train.caption_feature == "word_mean" and self.data.text == "caption":
            raise ValueError("train.caption_feature=word_mean needs data.text=words (it averages "
                             "the training text's words; a full caption's are mostly stop words)")
        return self


def _tiny_model() -> ModelConfig:
    """The demo's model: the named config ``sseg_tiny`` (sseg/models/model_configs/)."""
    from sseg.models.registry import load_model_config

    return ModelConfig.model_validate(load_model_config("sseg_tiny")[1])


class EvaluateConfig(StrictModel):
    checkpoint: str | None = None  # path, or an MLflow run id of a pretraining run
    dataset: Literal["voc", "context", "coco_object", "ade20k", "cityscapes", "world"] = "world"
    root: str = "data/world/voc"
    split: str = "val"
    protocols: list[Literal["with_background", "without_background"]] = ["with_background",
                                                                           "without_background"]
    # For a dataset without a background class (the world), classes that count as background in the
    # with-background protocol; the world's default is its stuff classes (VOC's background holds stuff too).
    background_classes: list[str] | None = None
    segment: dict = Field(default_factory=dict)  # SegmentConfig fields (templates, bg_thresh, window, ...)
    max_images: int | None = Field(default=None, gt=0)
    num_actors: int = Field(default=1, gt=0)
    gpus_per_actor: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=8, gt=0)
    pictures: int = Field(default=8, ge=0)
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig(experiment="sseg-eval")


class SegmentJobConfig(StrictModel):
    """``jobs/segment.py``: any images, any class names, any checkpoint that can segment."""

    checkpoint: str | None = None  # path, or an MLflow run id
    classes: str | None = None  # "cat,dog,grass", "person;people,...", or a YAML/JSON file of definitions
    images: list[str] = Field(default_factory=list)
    out: str = "outputs/segment"
    log_mlflow: bool = False
    segment: dict = Field(default_factory=dict)  # SegmentConfig fields (templates, bg_thresh, window, ...)
    tracking: TrackingConfig = TrackingConfig(experiment="sseg-segment")

