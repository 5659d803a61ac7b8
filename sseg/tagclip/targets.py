"""Training targets of the seen / unseen setting, from a dataset's label map.

* **seen labels**: dataset class ids -> index among the seen classes; unseen, ignored (e.g. VOC's
  background in the paper's split), void and padding pixels -> the ignore index. The image is kept
  (the inductive setting masks unseen pixels, it does not drop images).
* **trusty target**: 1 on pixels whose *unmasked* label is an unseen class, 0 on every other pixel —
  seen, ignored class, void and padding alike (the public code's convention).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from sseg.errors import DataError

IGNORE_INDEX = 255


def seen_lookup(num_classes: int, seen_ids: Sequence[int], ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """uint8 [256] table: dataset id -> seen index (position in ``seen_ids``), everything else -> ignore."""
    if num_classes > 255:
        raise DataError(f"{num_classes} classes do not fit uint8 label maps")
    table = np.full(256, ignore_index, dtype=np.uint8)
    for index, class_id in enumerate(seen_ids):
        if not 0 <= class_id < num_classes:
            raise DataError(f"seen class id {class_id} outside [0, {num_classes})")
        table[class_id] = index
    return table


def seen_labels(label: np.ndarray | torch.Tensor, lookup: np.ndarray) -> np.ndarray | torch.Tensor:
    """Dataset label map (uint8 / integer) -> seen-class label map (same type; ignore elsewhere)."""
    if isinstance(label, torch.Tensor):
        table = torch.as_tensor(lookup, device=label.device).long()
        return table[label.long()]
    return lookup[np.asarray(label, dtype=np.uint8)]


def trusty_target(label: np.ndarray | torch.Tensor, unseen_ids: Sequence[int]) -> np.ndarray | torch.Tensor:
    """float32 map: 1 where the unmasked label is an unseen class, else 0 (void and padding included)."""
    if isinstance(label, torch.Tensor):
        ids = torch.as_tensor(list(unseen_ids), dtype=torch.long, device=label.device)
        return torch.isin(label.long(), ids).float()
    return np.isin(np.asarray(label), np.asarray(list(unseen_ids), dtype=np.int64)).astype(np.float32)
