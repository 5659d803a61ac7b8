"""Settings of the tuning-free mask classifier (TUSS): mask embedding, the probe, label propagation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sseg.config import StrictModel

EmbedMethod = Literal["maskclip", "dba", "pooled", "pooled_dba"]


class EmbedConfig(StrictModel):
    """How masks become embeddings.

    ``method``: ``maskclip`` (CLIP, the baseline: MaskCLIP's value path averaged under the mask), ``dba``
    (CLIP, discrimination-bias aligned last block) or ``pooled`` (S-Seg: its semantic map averaged under
    the mask, then its image projection — the mask-feature path its contrastive loss trained) or
    ``pooled_dba`` (S-Seg with an affinity-restricted analogue of DBA on its semantic map, a named deviation:
    ``x + softmax(x xᵀ/√C + B) x`` with DBA's mask-sharing bias ``B``).
    Geometry: the image is resized to ``short_side`` (None: kept), rounded to the token stride, and run
    whole or in ``window`` / ``stride`` sliding windows; ``gsw`` averages that with a global pass of the
    whole image at short side ``window`` (the paper's global + sliding window, 0.5 / 0.5).
    """

    method: EmbedMethod = "pooled"
    dba_bias: float = Field(-4.0, le=0.0)  # B outside shared masks (-inf allowed: strict restriction)
    short_side: int | None = Field(None, gt=0)
    sliding: bool = False
    window: int = Field(224, gt=0)
    stride: int = Field(112, gt=0)
    gsw: bool = False
    batch_size: int = Field(16, gt=0)  # windows per forward pass

    @model_validator(mode="after")
    def _check(self) -> "EmbedConfig":
        if self.stride > self.window:
            raise ValueError(f"embed.stride {self.stride} > embed.window {self.window} leaves pixels uncovered")
        if self.gsw and not self.sliding:
            raise ValueError("embed.gsw averages a global and a sliding pass: it needs embed.sliding=true")
        return self


class ProbeConfig(StrictModel):
    """Cosine linear probe (normalised weights, no bias, fixed scale), soft-label cross-entropy weighted by
    mask area; SGD with momentum, linear warm-up then cosine decay (MAE's linear-probe recipe).

    ``init``: the paper does not say; ``prototype`` starts each class at the label-weighted mean of its
    masks' embeddings (weight imprinting), ``random`` at a random direction. At scale 100 and lr 0.02 the
    first steps turn a random direction by about a radian, and on noisy labels the random start ends far
    worse (tests/test_tuss_glcc.py has the toy case), so the default is ``prototype``.
    """

    init: Literal["prototype", "random"] = "prototype"
    scale: float = Field(100.0, gt=0.0)
    lr: float = Field(0.02, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(512, gt=0)
    epochs: int = Field(30, gt=0)
    warmup_epochs: int = Field(3, ge=0)
    seed: int = 0
    # research option (issue 22's noise study): the generalised cross-entropy (1 - p^q) / q of Zhang and Sabuncu
    # (2018), robust to label noise; 0 = plain cross-entropy (the paper)
    gce_q: float = Field(0.0, ge=0.0, le=1.0)


class PropagationConfig(StrictModel):
    """kNN graph, transductive label propagation and the inductive classifier."""

    k: int = Field(50, gt=0)  # neighbours in the graph and for a new mask
    gamma: float = Field(1.0, gt=0.0)  # a_ij = (x_iᵀ x_j)^gamma (negative similarities count as 0)
    alpha: float = Field(0.9, gt=0.0, lt=1.0)
    tol: float = Field(1e-6, gt=0.0)
    max_iter: int = Field(200, gt=0)
    k_bar: float = Field(50.0, gt=0.0)  # the inductive normaliser's reference neighbour count
    weight: float = Field(1.0, ge=0.0)  # inductive: prior + weight · neighbour votes


class NoiseModelConfig(StrictModel):
    """A model of full supervision's label noise (sseg/tuss/noise_model.py): ``volmin`` learns the transition
    matrix from the noisy labels (VolMinNet) and fits every probe step through it; λ (``lambdas``) or no noise
    model at all is chosen on the held-out slice by the likelihood of its noisy labels. ``none``: the paper's
    GLCC. Only full supervision uses it (the kind whose labels GLCC keeps every round)."""

    kind: Literal["none", "volmin"] = "none"
    lambdas: tuple[float, ...] = (0.001, 0.01)  # log det T's weights to choose from
    # of the joint fit and of every probe fitted through T: through p·T each gradient is damped by T's diagonal,
    # and at the probe's 10 epochs the corrected fit underfits even with the true T (docs/experiments.md, 17)
    epochs: int = Field(100, gt=0)
    transition_lr: float = Field(0.01, gt=0.0)  # Adam on T's logits
    # T's diagonal is at least this: every class keeps that share of its own label (noise below 50 % per class,
    # the usual assumption; without it the flooded small classes' diagonals collapse, docs/experiments.md 18); 0:
    # VolMinNet's free T
    min_diagonal: float = Field(0.5, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> "NoiseModelConfig":
        if self.kind == "volmin" and not self.lambdas:
            raise ValueError("glcc.noise_model.lambdas needs at least one λ for kind=volmin")
        if any(lam <= 0 for lam in self.lambdas):
            raise ValueError(f"glcc.noise_model.lambdas must be positive (got {list(self.lambdas)})")
        return self


class GLCCConfig(StrictModel):
    """Global-local consistent classifier: the probe and label propagation bootstrapping each other.

    ``order``: the steps in turn (``probe``, ``propagation``); the paper's GLCC is two rounds of
    probe → propagation. Each step trains on the supervision filled in by the previous step's scores.
    """

    order: tuple[Literal["probe", "propagation"], ...] = ("probe", "propagation", "probe", "propagation")
    probe: ProbeConfig = ProbeConfig()
    propagation: PropagationConfig = PropagationConfig()
    noise_model: NoiseModelConfig = NoiseModelConfig()

    @model_validator(mode="after")
    def _check(self) -> "GLCCConfig":
        if not self.order:
            raise ValueError("glcc.order needs at least one step")
        return self
