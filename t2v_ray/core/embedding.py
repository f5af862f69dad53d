"""TaskEmbedding: one Fisher value per probe filter, with layer boundaries and provenance."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TaskEmbedding:
    """A task's TASK2VEC embedding.

    Attributes:
        vector: 1-D float array, one entry per filter of the probe (concatenated over layers).
        layer_offsets: start of each layer's block in ``vector`` plus the total length at the end.
        meta: provenance (probe, method, n_samples, head accuracy, seconds, ...).
    """

    vector: np.ndarray
    layer_offsets: list[int]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vector = np.asarray(self.vector, dtype=np.float64).reshape(-1)
        if self.layer_offsets and self.layer_offsets[-1] != self.vector.size:
            raise ValueError(
                f"layer_offsets end at {self.layer_offsets[-1]} but the vector has {self.vector.size} entries"
            )

    @property
    def dim(self) -> int:
        return int(self.vector.size)

    @property
    def norm(self) -> float:
        """L1 norm (the paper's Fig. 2 right uses the L1 norm as the task-complexity proxy)."""
        return float(np.abs(self.vector).sum())

    def layers(self) -> list[np.ndarray]:
        """The vector split into per-layer blocks."""
        o = self.layer_offsets
        return [self.vector[o[i] : o[i + 1]] for i in range(len(o) - 1)]
