"""sseg: open-vocabulary semantic segmentation learned from image-text pairs.

Importing the package installs the narrow torchvision fix from :mod:`sseg._compat` (applied on the
first ``import torchvision``), so every process that imports sseg (Ray workers included) can import timm
and open_clip, and one that never needs torch does not load it.
"""

from sseg._compat import install_torchvision_hook

install_torchvision_hook()

__version__ = "0.1.0"
