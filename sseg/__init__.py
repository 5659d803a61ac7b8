"""sseg: open-vocabulary semantic segmentation learned from image-text pairs.

Importing the package applies the narrow torchvision fix from :mod:`sseg._compat`, so every
process that imports sseg (Ray workers included) can import timm and open_clip.
"""

from sseg._compat import ensure_torchvision_importable

ensure_torchvision_importable()

__version__ = "0.1.0"
