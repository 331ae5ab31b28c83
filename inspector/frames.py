"""The unit that flows through the pipeline: one captured image and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """A BGR uint8 image (H, W, 3) with its provenance.

    ``index`` increases monotonically per source (for files: the frame number in the
    file, so a replay can be resumed by index). ``captured_at`` is timezone-aware UTC.
    """

    image: np.ndarray
    source_id: str
    index: int
    captured_at: datetime
    part_id: str | None = None
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])
