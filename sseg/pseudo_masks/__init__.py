"""Class-agnostic pseudo-masks: batched K-Means, the pixel and DINO generators, oracle mIoU.

Importing the package registers both generators, so ``build_generator(config)`` finds them.
"""

from sseg.pseudo_masks.generator import (
    PseudoMaskConfig,
    PseudoMaskGenerator,
    available_generators,
    build_generator,
    generator_class,
)
from sseg.pseudo_masks.kmeans import KMeansResult, batched_kmeans, kmeans_plus_plus
from sseg.pseudo_masks.pixel import PixelKMeansGenerator, rgb_to_lab
from sseg.pseudo_masks.dino import DinoKMeansGenerator, load_dino_state_dict
from sseg.pseudo_masks.oracle import OracleMIoU, oracle_relabel

__all__ = [
    "DinoKMeansGenerator",
    "KMeansResult",
    "OracleMIoU",
    "PixelKMeansGenerator",
    "PseudoMaskConfig",
    "PseudoMaskGenerator",
    "available_generators",
    "batched_kmeans",
    "build_generator",
    "generator_class",
    "kmeans_plus_plus",
    "load_dino_state_dict",
    "oracle_relabel",
    "rgb_to_lab",
]
