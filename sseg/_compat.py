"""Environment fixes that must run before torchvision (and so timm / open_clip) is imported.

PyPI's torchvision wheels are CUDA builds. Paired with a CPU-only torch, torchvision's C
extension fails to load and ``torchvision/_meta_registrations.py`` then raises
``operator torchvision::nms does not exist`` at import time. Declaring the two operator schemas
that module registers fake kernels for makes the pure-Python parts (transforms, model
definitions) importable. The C++ ops themselves (nms, roi_align, torchvision.io) stay unavailable;
sseg decodes images with Pillow and never calls them.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_PATCHED = False
_LIBRARY = None  # kept alive: a torch.library.Library unregisters its defs when collected


def _torchvision_c_extension_loads() -> bool:
    """Load torchvision's ``_C`` the way torchvision does, without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # not installed: nothing to fix
    import torch

    for location in spec.submodule_search_locations:
        for name in os.listdir(location):
            if name.startswith("_C") and name.endswith((".so", ".pyd")):
                try:
                    torch.ops.load_library(os.path.join(location, name))
                    return True
                except (OSError, RuntimeError):
                    return False
    return False


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` work on CPU-only torch. Returns True if a patch was applied.

    Only acts when the C extension really fails to load; idempotent and cheap afterwards.
    """
    global _PATCHED, _LIBRARY
    if _PATCHED:
        return True
    import sys

    if "torchvision" in sys.modules or _torchvision_c_extension_loads():
        return False
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - already defined by someone else
        _PATCHED = True
        return True
    except (AttributeError, RuntimeError):
        pass
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define(
        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    )
    _PATCHED = True
    log.info("torchvision C extension unavailable (CPU torch + CUDA torchvision): "
             "declared nms/qnms schemas so the pure-Python parts import")
    return True


class _FixBeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs :func:`ensure_torchvision_importable` just before the first ``import torchvision``, so that
    importing sseg does not import torch: a Ray Data worker that only decodes images never loads it
    (≈ 1 s and a few hundred MB per fresh worker; benchmarks/bench_data_startup.py)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision":
            remove_torchvision_hook()
            ensure_torchvision_importable()
        return None  # the regular finders import it


def install_torchvision_hook() -> None:
    """Apply the torchvision fix lazily, on the first ``import torchvision`` of the process."""
    if "torchvision" in sys.modules or any(isinstance(f, _FixBeforeTorchvision) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _FixBeforeTorchvision())


def remove_torchvision_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _FixBeforeTorchvision)]
