"""Reading one task for training: a torch ``Dataset`` over its rows and the paper's balanced sampler."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from t2v_ray.data.images import DEFAULT_BACKGROUND, Background, ImageDecodeError, decode_image, flatten

__all__ = ["BalancedSampler", "ImageDecodeError", "TaskDataset", "balanced_sampler", "decode_image"]


def _default_transform(img: Image.Image) -> torch.Tensor:
    # HWC uint8 -> CHW float in [0, 1]; probes pass their own transform, this only keeps the Dataset usable bare.
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


class TaskDataset(Dataset):
    """One task's images as ``(image_tensor, int_label)`` pairs.

    Args:
        table_or_rows: a shard-schema table (e.g. from ``TaskLibrary.read_task``) or dicts with ``image``,
            ``label``, ``split`` and optionally ``image_id``.
        transform: maps a PIL image to a tensor (the probe's transform); default: to float CHW in [0, 1].
        split: keep only rows of this split; None keeps all.
        mode: PIL mode images are converted to before ``transform`` (glyphs are grayscale, probes want RGB);
            None leaves images as decoded.
        background: colour (name or RGB) transparent pixels are composited onto when converting to ``mode``.
    """

    def __init__(
        self,
        table_or_rows: pa.Table | Sequence[Mapping[str, Any]],
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        split: str | None = "train",
        mode: str | None = "RGB",
        background: Background = DEFAULT_BACKGROUND,
    ):
        rows = table_or_rows.to_pylist() if isinstance(table_or_rows, pa.Table) else list(table_or_rows)
        if split is not None:
            rows = [r for r in rows if r.get("split", split) == split]
        self.images: list[bytes] = [r["image"] for r in rows]
        self.labels = np.asarray([int(r["label"]) for r in rows], dtype=np.int64)
        self.image_ids = [str(r.get("image_id", i)) for i, r in enumerate(rows)]
        self.transform = transform or _default_transform
        self.mode = mode
        self.background = background

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        """1 + the largest label present (0 for an empty dataset)."""
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = decode_image(self.images[index], self.image_ids[index])
        if self.mode is not None:
            img = flatten(img, self.mode, self.background)
        return self.transform(img), int(self.labels[index])


class BalancedSampler(Sampler[int]):
    """Each epoch, ``num_samples`` indices drawn with replacement so that classes are equally likely.

    Paper supplement §4.1: a class c is drawn uniformly, then an image uniformly within c; equivalently each
    image i is drawn with probability 1 / (C · n_{c(i)}). Every ``iter()`` is a new epoch with fresh draws.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, num_samples: int, generator: torch.Generator):
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size == 0:
            raise ValueError("balanced_sampler needs at least one label")
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        weights = 1.0 / (len(counts) * counts[inverse])
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.num_samples = int(num_samples)
        self.generator = generator

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        draws = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self.generator)
        return iter(draws.tolist())


def balanced_sampler(
    labels: Sequence[int] | np.ndarray,
    num_samples: int,
    generator: torch.Generator | int | None = None,
    *,
    seed: int | None = None,
) -> BalancedSampler:
    """The paper's class-balanced sampler with replacement (see :class:`BalancedSampler`).

    Args:
        labels: the label of every image of the task (e.g. ``TaskDataset.labels``).
        num_samples: images drawn per epoch, whatever the task size.
        generator: a torch generator, or an int seed for a new one.
        seed: keyword alias for an int ``generator``.
    """
    if isinstance(generator, int) or generator is None:
        gen = torch.Generator()
        gen.manual_seed(int(generator if generator is not None else (seed if seed is not None else 0)))
        generator = gen
    return BalancedSampler(labels, num_samples, generator)
