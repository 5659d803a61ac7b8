"""Config schemas of the jobs. Every section is a StrictModel: unknown keys and bad values are errors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from sseg.config import StrictModel
from sseg.world import WorldConfig
from sseg.models.config import ModelConfig
from sseg.pseudo_masks.generator import PseudoMaskConfig


def check_crop_scale(value: tuple[float, float]) -> tuple[float, float]:
    """The random-resized-crop area range of every training config."""
    if not 0 < value[0] <= value[1] <= 1:
        raise ValueError("crop_scale must satisfy 0 < low <= high <= 1")
    return value


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
        return check_crop_scale(value)


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


class RuntimeConfig(StrictModel):
    """How a training stage runs on the cluster: the fields every stage's ``train`` section shares (each
    stage's train config inherits them; a stage whose defaults differ sets them where it uses its train
    config, e.g. ``SemiVLConfig.train``)."""

    seed: int = 0
    num_workers: int = Field(default=1, gt=0)
    use_gpu: bool = False
    # CPUs each training worker holds. None: 1, lowered so that num_workers × it + data_cpus fits the
    # cluster (an explicit value that does not fit is a one-line error before any work).
    cpus_per_worker: float | None = Field(default=None, gt=0)
    # how Ray Train places the workers on a multi-node cluster: PACK (fewest nodes, Ray's default) or
    # SPREAD (one per node where possible, e.g. to use every node's network and memory)
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"
    # CPUs kept free for the Ray Data stages that feed training while it runs (Ray Data only gets what
    # the training workers do not hold; with 0 CPU left the stream stops and training waits forever).
    data_cpus: float = Field(default=1, ge=0)
    # No worker progress (a batch received, a step finished) for this long stops the run with a message
    # naming the starved stage and the cluster's free CPUs. None: never.
    stall_timeout_s: float | None = Field(default=600, gt=0)
    threads_per_worker: int | None = Field(default=None, gt=0)  # torch threads; None: cpus_per_worker
    max_failures: int = Field(default=2, ge=0)  # worker restarts (a ConfigError/DataError/CheckpointError: none)
    log_every: int = Field(default=10, gt=0)
    checkpoint_every: int = Field(default=200, gt=0)
    checkpoints_to_keep: int = Field(default=2, gt=0)
    shuffle_buffer: int = Field(default=512, ge=0)
    # The seed also fixes the data: file order per epoch, crops, views and shuffle (Ray Data keeps the row
    # order, at some cost in throughput), so a rerun with the same seed and worker count trains on the same
    # batches (pretraining: with the pseudo-mask cache only; the stream path's order follows its actor
    # pool). false: the fastest, non-deterministic order.
    deterministic_data: bool = True


class TrainConfig(RuntimeConfig):
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
    weight_mask: float = 1.0
    weight_contrastive: float = 1.0
    weight_focal: float = 20.0
    weight_dice: float = 1.0
    # Side of the grid the mask losses are computed on: targets larger than it are resized to it (nearest)
    # and the predicted masks upsampled to it. None: the target size (MaskFormer). A cost saving in the
    # spirit of Mask2Former's sampled-point losses; the CPU demo uses 32 (2x its 16-px mask predictions).
    mask_loss_size: int | None = Field(default=None, ge=1)
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
                                     caption_feature="word_mean", weight_words=0.25, mask_loss_size=32)
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



# ----------------------------------------------------------------------------- SemiVL (jobs/semivl.py)


def _semivl_world() -> "WorldConfig":
    """The world SemiVL trains on: the demo world's seed and look, with a labelled train split (1600
    images; its val split is byte-identical to data/world's) and no caption shards to speak of."""
    return WorldConfig(num_train=1, shard_size=1, num_labeled_train=1600)


class SemiVLComponents(StrictModel):
    """The five SemiVL components (paper Table 6); the ablation turns them off one by one."""

    vl_init: bool = True  # off: the same architecture randomly initialised
    spatial_ft: bool = True  # off: the whole vision tower trains
    language_decoder: bool = True  # off: a DeepLabV3+ head
    guidance: bool = True  # dense VL guidance from a frozen copy of the initial VLM (needs vl_init)
    # Class definitions (concept lists, a class scores the max over its concepts): "guidance" (the paper and
    # its public code: concepts for the dense VL guidance only, the decoder and the evaluation see class
    # names), "decoder" (ours: the concepts through the decoder in training and evaluation, and the
    # guidance), false (one concept per class, its name).
    class_definitions: Literal["guidance", "decoder", False] = "guidance"


class SemiVLDataConfig(StrictModel):
    dataset: Literal["voc", "context", "coco_object", "ade20k", "cityscapes", "world"] = "world"
    root: str = "data/world_semivl/voc"
    train_split: str = "train"  # the reader split holding the labelled + unlabelled pool
    val_split: str = "val"
    split_dir: str | None = None  # holds labeled.txt + unlabeled.txt; None: a seeded random split
    num_labeled: int = Field(default=100, gt=0)  # for the random split (1/16 of the world's 1600)
    split_seed: int = 0
    crop_size: int = Field(default=64, ge=16)
    scale: tuple[float, float] = (0.5, 2.0)  # weak view: random rescale range (UniMatch)
    # mmseg's Resize img_scale (long, short) the random rescale is relative to (the public SemiVL code:
    # (2048, 512), i.e. short side 512 × [0.5, 2]); None: relative to the image's own size
    img_scale: tuple[int, int] | None = None
    concepts: str | None = "world"  # class definitions: a built-in (voc, cityscapes, world) or a file
    templates: str | list[str] = "clip7"  # prompt templates of the text tower (the paper: "single")


class SemiVLVLMConfig(StrictModel):
    kind: Literal["sseg", "clip"] = "sseg"
    # sseg: a checkpoint path or MLflow run id; None = the newest finished run of `sseg-pretrain`.
    # clip: a local open_clip state-dict file (read with weights_only=True; never downloaded).
    checkpoint: str | None = None
    clip_model: str = "ViT-B-16"
    clip_model_cfg: dict | None = None
    embed_dim: int | None = Field(default=None, gt=0)  # expected text/image embedding size, if fixed


class SemiVLTrainConfig(RuntimeConfig):
    steps: int = Field(default=400, gt=0)
    batch_size: int = Field(default=4, gt=0)  # labelled + as many unlabelled images per step (paper: 8 + 8)
    lr: float = Field(default=1e-3, gt=0)  # base lr (paper: 1e-4 VOC)
    weight_decay: float = Field(default=0.01, ge=0)
    head_lr_mult: float = Field(default=10.0, gt=0)
    backbone_lr_mult: float = Field(default=0.1, ge=0)  # paper: 0.01 VOC, 0.001 COCO/ADE, 0.1 Cityscapes
    warmup_steps: int = Field(default=0, ge=0)
    poly_power: float = 0.9
    tau: float = Field(default=0.95, ge=0, le=1)
    guidance_lambda: tuple[float, float] = (0.1, 0.0)
    guidance_threshold: float = Field(default=0.9, ge=0, le=1)
    guidance_scale: float = 100.0
    supervised_only: bool = False  # labelled images alone, no consistency or guidance
    grad_clip: float | None = Field(default=None, gt=0)


class SemiVLEvalConfig(StrictModel):
    max_images: int | None = Field(default=None, gt=0)
    window: int = Field(default=64, gt=0)  # sliding window (paper: 512 / stride 426)
    stride: int = Field(default=64, gt=0)
    short_side: int | None = None  # None: keep the image size (paper: VOC at its own size)
    num_actors: int = Field(default=1, gt=0)
    batch_size: int = Field(default=16, gt=0)


class SemiVLConfig(StrictModel):
    """Defaults = the tiny CPU run on the world from our S-Seg run; configs/semivl_voc.yaml = the paper."""

    world: WorldConfig | None = Field(default_factory=_semivl_world)
    world_dir: str = "data/world_semivl"
    data: SemiVLDataConfig = SemiVLDataConfig()
    vlm: SemiVLVLMConfig = SemiVLVLMConfig()
    components: SemiVLComponents = SemiVLComponents()
    # decoder sizes etc.: fields of sseg.semivl.config.SemiVLModelConfig (vlm, sseg, decoder and
    # num_classes are set by the run). Default: an eighth of the paper's widths, decoder at stride 8, for
    # the 64-px world on 2 CPU cores.
    model: dict = Field(default_factory=lambda: {"channels": 16, "text_channels": 16, "up_channels": [8, 8],
                                                 "skip_channels": [4, 4], "deeplab_channels": 32,
                                                 "dense_pool": 2})
    # the world's budget (docs/experiments.md, measurement 14): 16 + 16 images a step; the backbone at the
    # base lr (the paper's x0.01 suits CLIP's finished features; our VLM's must still learn the classes' look)
    train: SemiVLTrainConfig = SemiVLTrainConfig(threads_per_worker=2, max_failures=1, log_every=20,
                                                 checkpoints_to_keep=1, shuffle_buffer=256, steps=800,
                                                 batch_size=16, backbone_lr_mult=1.0)
    eval: SemiVLEvalConfig = SemiVLEvalConfig()
    storage_path: str = "runs"
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig(experiment="sseg-semivl")

    @model_validator(mode="after")
    def _guidance_needs_init(self) -> "SemiVLConfig":
        if self.components.guidance and not self.components.vl_init:
            raise ValueError("components.guidance needs components.vl_init (the guide is the frozen initial VLM)")
        if self.vlm.kind == "clip" and self.components.vl_init and not self.vlm.checkpoint:
            raise ValueError("vlm.kind=clip needs vlm.checkpoint (a local CLIP weights file; nothing is downloaded)")
        return self


# ----------------------------------------------------------------------------- TagCLIP (jobs/tagclip.py)


class TagCLIPDataConfig(StrictModel):
    dataset: Literal["voc", "context", "coco_object", "coco_stuff", "ade20k", "cityscapes", "world"] = "world"
    root: str = "data/world/voc"
    train_split: str = "train"  # labelled training images (unseen classes masked, images kept)
    val_split: str = "val"
    # seen / unseen classes: a built-in split of sseg/tagclip/splits (voc, coco_stuff, world, world_b) or a
    # JSON file {"unseen": [...], "ignore": [...]}
    split: str = "world"
    crop_size: int = Field(default=64, ge=16)  # paper: 512
    scale: tuple[float, float] = (0.5, 2.0)  # random rescale range before the crop (paper: 0.5-2)
    templates: str | list[str] = "clip7"  # prompt templates of the text tower (paper: "a photo of a {}.")

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("scale must satisfy 0 < low <= high")
        return value


class TagCLIPTrainConfig(RuntimeConfig):
    steps: int = Field(default=1000, gt=0)  # paper: 20k (VOC), 80k (COCO-Stuff)
    batch_size: int = Field(default=16, gt=0)  # images per step over all workers (paper: 16)
    lr: float = Field(default=1e-4, gt=0)  # base lr (paper: 2e-5); head and prompts get it x their multiplier
    weight_decay: float = Field(default=0.01, ge=0)
    head_lr_mult: float = Field(default=10.0, gt=0)
    prompt_lr_mult: float = Field(default=10.0, gt=0)  # visual prompts (CLIP only)
    # the VLM's vision tower trained at lr x this (0: frozen, the paper). The paper adapts CLIP's features to
    # the seen classes through deep visual prompts; a VLM without prompts (our S-Seg convnet) adapts only
    # this way (docs/experiments.md, measurement 15). The text tower always stays frozen.
    vision_lr_mult: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)  # paper: 1500 (mmcv linear warm-up from 1e-6)
    poly_power: float = Field(default=0.9, gt=0)
    min_lr: float = Field(default=0.0, ge=0)  # poly floor (paper: 1e-6)
    weight_focal: float = Field(default=20.0, ge=0)
    weight_dice: float = Field(default=1.0, ge=0)
    weight_trusty: float = Field(default=10.0, ge=0)  # gamma of the trusty loss
    trusty_loss: Literal["focal", "dice"] = "focal"  # the public code: focal; the paper: dice
    # train on every class of the split (seen and unseen): the fully supervised upper bound, no unseen class
    all_classes: bool = False
    grad_clip: float | None = Field(default=None, gt=0)
    bf16: Literal["auto", "on", "off"] = "auto"  # auto: bf16 autocast on GPU only


class TagCLIPEvalConfig(StrictModel):
    max_images: int | None = Field(default=None, gt=0)
    window: int = Field(default=64, gt=0)  # sliding window (paper: 512 / stride 426)
    stride: int = Field(default=64, gt=0)
    short_side: int | None = None  # None: keep the image size
    num_actors: int = Field(default=1, gt=0)
    batch_size: int = Field(default=16, gt=0)
    pictures: int = Field(default=8, ge=0)


class TagCLIPConfig(StrictModel):
    """Defaults = the world with our S-Seg run as the VLM (the demo's world and its labelled train split);
    configs/tagclip_voc.yaml = the paper's inductive VOC setting."""

    world: WorldConfig | None = WorldConfig()  # the demo's world (make demo generates it); null for real data
    world_dir: str = "data/world"
    data: TagCLIPDataConfig = TagCLIPDataConfig()
    vlm: SemiVLVLMConfig = SemiVLVLMConfig()
    # decoder and variant: fields of sseg.tagclip.config.TagCLIPModelConfig (trusty_token, trusty_learner,
    # inference_weighting, seen_bias, layers, heads, prompt_tokens, ...); the run sets vlm, sseg, clip_model,
    # clip_model_cfg, seen_classes and image_size. The world default mixes in the VLM's dense zero-shot at
    # inference (zero_shot_ensemble 0.8, zsseg's weight; a deviation: only seen names train the decoder, and on
    # this world's near-orthogonal text space it loses the unseen names; docs/results.md, TagCLIP)
    model: dict = Field(default_factory=lambda: {"zero_shot_ensemble": 0.8})
    # the world's budget: 3000 steps of 16 (at 1000 the decoder stays at the VLM's zero-shot seen mIoU and the
    # trusty token does not help; docs/experiments.md, measurement 15); the paper: 20k on VOC
    train: TagCLIPTrainConfig = TagCLIPTrainConfig(threads_per_worker=2, max_failures=1, log_every=100,
                                                   checkpoint_every=1000, checkpoints_to_keep=1,
                                                   shuffle_buffer=256, steps=3000)
    eval: TagCLIPEvalConfig = TagCLIPEvalConfig()
    storage_path: str = "runs"
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig(experiment="sseg-tagclip")

    @model_validator(mode="after")
    def _check(self) -> "TagCLIPConfig":
        if self.vlm.kind == "clip" and not self.vlm.checkpoint:
            raise ValueError("vlm.kind=clip needs vlm.checkpoint (a local CLIP weights file; nothing is downloaded)")
        return self


# ----------------------------------------------------------------------------- S-Seg+ (jobs/self_train.py)

from sseg.models.upernet import UperNetConfig  # noqa: E402


def _tiny_plus_model() -> UperNetConfig:
    """S-Seg+'s demo model: the named config ``sseg_plus_tiny`` (sseg/models/model_configs/)."""
    from sseg.models.registry import load_model_config

    return UperNetConfig.model_validate(load_model_config("sseg_plus_tiny")[1])


class SelfTrainTargetConfig(StrictModel):
    """The target dataset (any layout of jobs/evaluate.py): its train images are pseudo-labelled, its
    labelled val split evaluates S-Seg and S-Seg+."""

    dataset: Literal["voc", "context", "coco_object", "ade20k", "cityscapes", "world"] = "world"
    root: str = "data/world/voc"
    train_split: str = "train"
    val_split: str = "val"
    classes: list[str] | None = None  # None: the dataset's class names; given, they must equal them
    max_train_images: int | None = Field(default=None, gt=0)
    # with_background protocol on a dataset without a background class (the world: its stuff classes)
    background_classes: list[str] | None = None


class PseudoLabelConfig(StrictModel):
    # None: <storage_path>/pseudo_labels/<dataset>-<cache key>; a cache of another checkpoint, class list
    # or inference settings in a given directory is refused, naming the difference
    cache_dir: str | None = None
    chunk_size: int = Field(default=250, gt=0)  # images per cache file (the unit of resume)
    num_actors: int = Field(default=2, gt=0)
    gpus_per_actor: float = Field(default=0.0, ge=0)
    threads_per_actor: int = Field(default=1, gt=0)
    segment: dict = Field(default_factory=dict)  # SegmentConfig overrides (the world: 64 px, no sliding)
    # training ignores pixels whose pseudo-label confidence (normalised class probability) is below this
    confidence_threshold: float = Field(default=0.5, ge=0.0, le=1.0)


class SelfTrainTrainConfig(RuntimeConfig):
    """Defaults: the embedded CPU run. The paper (Table 6): configs/self_train_{voc,context,coco}.yaml."""

    global_batch_size: int = Field(default=16, gt=0)
    steps: int = Field(default=1200, gt=0)
    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(default=1500, ge=0)
    layer_decay: float = Field(default=0.7, gt=0, le=1)
    poly_power: float = Field(default=1.0, gt=0)
    grad_clip: float | None = Field(default=None, gt=0)
    bf16: Literal["auto", "on", "off"] = "auto"
    crop_size: int | None = Field(default=None, gt=7)  # None: model.image_size
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: bool = True
    # "random_resized_crop" (crop_scale; the demo) or "mmseg": BEiT/MAE's UperNet pipeline (resize to
    # resize_scale × a ratio in ratio_range, crop_size crop with cat_max_ratio, flip, photometric distortion)
    augment: Literal["random_resized_crop", "mmseg"] = "random_resized_crop"
    resize_scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = Field(default=0.75, gt=0, le=1)
    # cross-entropy class weights from the pseudo-labels' kept pixel counts: "none" (the paper's plain
    # cross-entropy) or "inverse_sqrt" (w ∝ frequency^-1/2, pixel-weighted mean 1, cap 10), so the
    # teacher's rare, small classes are not drowned by the large ones
    class_balance: Literal["none", "inverse_sqrt"] = "none"
    class_weights: list[float] | None = None  # set by the run from the pseudo-labels when class_balance is on

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        return check_crop_scale(value)

    @field_validator("ratio_range")
    @classmethod
    def _ratio_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("ratio_range must satisfy 0 < low <= high")
        return value


class SelfTrainEvalConfig(StrictModel):
    # the protocol of sseg_miou / sseg_plus_miou / gain. None: "all_classes" on a dataset without a background
    # class (every class a text query, no background: what pretraining reports) else "with_background"
    headline: Literal["all_classes", "with_background", "without_background"] | None = None
    protocols: list[Literal["all_classes", "with_background", "without_background"]] = [
        "with_background", "without_background"]
    segment: dict = Field(default_factory=dict)  # SegmentConfig overrides (the world: 64 px, no sliding)
    max_images: int | None = Field(default=None, gt=0)
    pictures: int = Field(default=8, ge=0)
    num_actors: int = Field(default=1, gt=0)
    gpus_per_actor: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=50, gt=0)


class SelfTrainConfig(StrictModel):
    """S-Seg+ (S-Seg paper, sec. 3.3.4): pseudo-label the target's train images with an S-Seg checkpoint,
    train UperNet-ViT on them, evaluate both. Defaults = the embedded CPU run on the world."""

    # S-Seg checkpoint path or MLflow run id; None: the newest finished run of pretrain_experiment that holds
    # a final checkpoint (none: a one-line error naming the pretraining command)
    checkpoint: str | None = None
    pretrain_experiment: str = "sseg-pretrain"
    world: WorldConfig | None = WorldConfig()  # generated into world_dir if absent; null for real data
    world_dir: str = "data/world"
    target: SelfTrainTargetConfig = SelfTrainTargetConfig()
    pseudo_labels: PseudoLabelConfig = PseudoLabelConfig(confidence_threshold=0.0,
                                                         segment={"flip": True, "scales": [1.0, 1.5]})
    model: UperNetConfig = Field(default_factory=_tiny_plus_model)  # class_names: set from the target
    # the CPU demo trains a randomly initialised ViT (no MAE weights offline): a larger lr and a milder layer
    # decay than the paper's fine-tuning of MAE weights (Table 6: lr 1e-4, decay 0.7; configs/self_train_voc.yaml)
    # and, measured on the world (README, S-Seg+): class-balanced cross-entropy, every pseudo-labelled pixel
    # kept, pseudo-labels from flip + 1.5× test-time augmentation (each named as a deviation)
    train: SelfTrainTrainConfig = SelfTrainTrainConfig(steps=1600, lr=1e-3, layer_decay=0.9, warmup_steps=100,
                                                       class_balance="inverse_sqrt", threads_per_worker=2,
                                                       stall_timeout_s=300, log_every=50, checkpoint_every=500,
                                                       shuffle_buffer=256)
    eval: SelfTrainEvalConfig = SelfTrainEvalConfig()
    storage_path: str = "runs"
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig(experiment="sseg-self-train")


# ----------------------------------------------------------------------------- TUSS (jobs/tuss.py)

from sseg.tuss.config import EmbedConfig, GLCCConfig, ProbeConfig  # noqa: E402


class TussDataConfig(StrictModel):
    """Masks of ``train_split`` build the classifier, masks of ``val_split`` are classified and scored."""

    dataset: Literal["voc", "context", "coco_object", "ade20k", "cityscapes", "world"] = "world"
    root: str = "data/world_semivl/voc"
    train_split: str = "train"
    val_split: str = "val"
    concepts: str | None = "world"  # class definitions: a built-in (voc, cityscapes, world) or a file; None: names
    templates: str | list[str] = "clip7"  # prompt templates of the text tower (the paper: CLIP's 80)
    max_train_images: int | None = Field(default=None, gt=0)
    max_val_images: int | None = Field(default=None, gt=0)
    chunk_size: int = Field(default=100, gt=0)  # images per cache file (the unit of resuming)


class TussMasksConfig(StrictModel):
    """Where the class-agnostic masks come from (``source``):

    ``generator``: our pseudo-mask generator (pixel K-Means or DINO, ``generator``), its segments split into
    connected components; ``sseg``: an S-Seg model's own masks (``checkpoint``; None: the VLM, which must then
    be S-Seg); ``files``: one PNG of segment ids per image, ``files_dir/<image key>.png`` (how SAM masks come
    in; ``no_mask_value`` marks uncovered pixels); ``ground_truth``: each connected region of each class (a
    diagnostic ceiling). Masks under ``min_area`` pixels are dropped and counted."""

    source: Literal["generator", "sseg", "files", "ground_truth"] = "generator"
    generator: PseudoMaskConfig = PseudoMaskConfig(pixel_stride=1)
    split_components: bool = True
    checkpoint: str | None = None
    files_dir: str | None = None
    no_mask_value: int | None = None
    # 32 px on the 64-px world: K-Means components ≥ 0.8 % of the image, ~17 masks per image, the masks'
    # ceiling (each mask its majority class) 88 mIoU (4: ~50 masks, 94; no split: 8 masks, 79)
    min_area: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "TussMasksConfig":
        if self.source == "files" and not self.files_dir:
            raise ValueError("masks.source=files needs masks.files_dir (one PNG of segment ids per image)")
        return self


class TussSupervisionConfig(StrictModel):
    """``full``: every training image's labels; ``semi``: ``num_labeled`` labelled images (UniMatch split files
    in ``split_dir``, or SemiVL's seeded random split), zero-shot scores for the rest; ``weak``: image-level
    labels (``image_labels``: the classes the captions mention, noise included, or the ground truth's);
    ``open_vocabulary``: the zero-shot argmax, nothing trained. ``noise_rate`` corrupts that share of the full
    supervision's mask labels, uniformly or along the zero-shot confusion matrix (``noise``)."""

    kind: Literal["full", "semi", "weak", "open_vocabulary"] = "weak"
    image_labels: Literal["captions", "ground_truth"] = "captions"
    captions_file: str | None = None  # JSON {image key: caption} for datasets other than the world
    split_dir: str | None = None
    num_labeled: int = Field(default=100, gt=0)
    split_seed: int = 0
    noise_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    noise: Literal["uniform", "confusion"] = "uniform"
    noise_seed: int = 0
    # true: the corrupted labels are pseudo-labels that GLCC's bootstrap replaces (as it does semi / weak
    # ones); false: they stay the supervision (the paper's rule for full supervision: one round, Y kept)
    noise_refill: bool = False

    @model_validator(mode="after")
    def _check(self) -> "TussSupervisionConfig":
        if self.noise_rate > 0 and self.kind != "full":
            raise ValueError("supervision.noise_rate corrupts mask labels: it needs supervision.kind=full")
        return self


class TussClassifierConfig(StrictModel):
    """GLCC and how its hyperparameters are chosen: on ``holdout_fraction`` of the *training* images (their
    labels used for this choice only), over ``grid``; ``tune=false`` keeps ``glcc`` as given."""

    # the world's ~28k training masks: 10 probe epochs (~550 SGD steps) instead of MAE's 90
    glcc: GLCCConfig = GLCCConfig(probe=ProbeConfig(epochs=10, warmup_epochs=1))
    tune: bool = True
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    # weight 0: the last probe's scores alone for new masks (the search may find the votes do not help)
    grid: dict[str, list[float]] = Field(default_factory=lambda: {"alpha": [0.5, 0.9, 0.99], "k": [10, 50],
                                                                 "weight": [0.0, 0.5, 1.0, 2.0, 4.0]})
    zero_shot_scale: float | None = Field(default=None, gt=0)  # None: the VLM's own (CLIP: 100)
    seed: int = 0


class TussConfig(StrictModel):
    """Tuning-free mask classification (TUSS). Defaults = the world with our S-Seg run: pixel K-Means masks,
    weak supervision from captions, GLCC; configs/tuss_voc.yaml = the paper's settings."""

    world: WorldConfig | None = Field(default_factory=_semivl_world)
    world_dir: str = "data/world_semivl"
    vlm: SemiVLVLMConfig = SemiVLVLMConfig()
    data: TussDataConfig = TussDataConfig()
    masks: TussMasksConfig = TussMasksConfig()
    embed: EmbedConfig = EmbedConfig()
    supervision: TussSupervisionConfig = TussSupervisionConfig()
    classifier: TussClassifierConfig = TussClassifierConfig()
    pool: ActorPoolConfig = ActorPoolConfig(batch_size=1)
    threads: int = Field(default=2, gt=0)  # torch threads per embedding actor and in the driver
    cache_dir: str = "data/tuss"
    pictures: int = Field(default=8, ge=0)
    storage_path: str = "runs"
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig(experiment="sseg-tuss")

    @model_validator(mode="after")
    def _check(self) -> "TussConfig":
        sseg_methods = ("pooled", "pooled_dba")
        if (self.vlm.kind == "sseg") != (self.embed.method in sseg_methods):
            raise ValueError(f"embed.method={self.embed.method} does not fit vlm.kind={self.vlm.kind} (S-Seg: "
                             f"{', '.join(sseg_methods)}; CLIP: maskclip, dba)")
        if self.vlm.kind == "clip" and not self.vlm.checkpoint:
            raise ValueError("vlm.kind=clip needs vlm.checkpoint (a local CLIP weights file; nothing is downloaded)")
        if self.masks.source == "sseg" and self.vlm.kind == "clip" and not self.masks.checkpoint:
            raise ValueError("masks.source=sseg with a CLIP VLM needs masks.checkpoint (an S-Seg run)")
        return self
