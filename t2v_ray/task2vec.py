"""``Task2Vec``: embed one task (any torch Dataset of (image, label)) with a probe network.

Orchestration only; the math lives in ``t2v_ray.core`` (heads, fisher). Steps (paper §3.1, supp. §4.2):
1. pick up to ``max_samples`` training images (seeded), remap labels to 0..C-1;
2. compute the probe's features once (eval mode, no grad) and train the head on them;
3. Fisher of the feature extractor's filters (Monte-Carlo or variational).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from t2v_ray.config import check_ranges, ranged
from t2v_ray.core.embedding import TaskEmbedding
from t2v_ray.core.fisher import montecarlo_fisher, prior_embedding, variational_fisher
from t2v_ray.core.heads import HeadConfig, train_head


@dataclass(frozen=True)
class EmbedConfig:
    """Everything that changes an embedding's value (it is hashed into the cache key).

    Attributes:
        method: "montecarlo" (exact per-sample Fisher) or "variational" (robust, paper §3.1).
        n_draws: Monte-Carlo labels per image drawn from the model; 0 = exact expectation over labels.
        max_classes: with n_draws=0, classes kept per image (most probable); None = all.
        max_samples: images per task used for head and Fisher (sampled without replacement when more).
        batch_size: images per forward/backward pass.
        head: head-training settings (paper: Adam lr 1e-4, 2 epochs of balanced sampling).
        beta: prior weight of the variational estimator; also scales the trivial embedding.
        var_epochs, lr_precision, lr_prior, var_labels: variational-estimator settings.
        trivial_n: N used for the trivial embedding t0 = (β/2N)·λ² of the Monte-Carlo estimator.
        seed: seeds sampling, head training and label draws.
        amp: forward passes under bf16 autocast (GPU only; Fisher arithmetic stays fp32).
    """

    method: Literal["montecarlo", "variational"] = "montecarlo"
    n_draws: int = ranged(0, 0, 1000)
    max_classes: int | None = ranged(None, 1)
    max_samples: int = ranged(10_000, 1)
    batch_size: int = ranged(64, 1)
    head: HeadConfig = field(default_factory=HeadConfig)
    beta: float = ranged(1.0, 0.0)
    var_epochs: int = ranged(2, 1)
    lr_precision: float = ranged(1e-2, 0.0)
    lr_prior: float = ranged(1e-2, 0.0)
    var_labels: Literal["true", "model"] = "true"
    trivial_n: int = ranged(1000, 1)
    seed: int = ranged(0, 0)
    amp: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("montecarlo", "variational"):
            raise ValueError(f"method must be 'montecarlo' or 'variational', got {self.method!r}")
        check_ranges(
            self, "embed"
        )  # also for configs built in code: max_samples=0 fails here, before any work


class Task2Vec:
    """Embed tasks with one probe network.

    Example:
        >>> probe = get_probe("resnet34", weights="IMAGENET1K_V1")
        >>> emb = Task2Vec(probe, method="montecarlo").embed(dataset)
        >>> emb.vector.shape  # (number of filters,)
    """

    def __init__(self, probe, method: str | None = None, device: str | torch.device | None = None, **opts):
        if isinstance(opts.get("head"), dict):
            opts["head"] = HeadConfig(**opts["head"])
        cfg = opts.pop("config", None) or EmbedConfig(**opts)
        if method is not None and method != cfg.method:
            cfg = EmbedConfig(**{**asdict(cfg), "method": method, "head": cfg.head})
        self.probe = probe
        self.config = cfg
        self.device = torch.device(device) if device is not None else _default_device()
        probe.to(self.device)
        probe.features.eval()

    # -------------------------------------------------------------------------------------- public
    def embed(self, dataset: Dataset) -> TaskEmbedding:
        """TASK2VEC embedding of ``dataset`` (items are (image_tensor, int_label))."""
        t0 = time.perf_counter()
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        subset, labels, classes = self._select(dataset, gen)
        images, feats = self._features(subset)
        head, stats = train_head(feats, labels.to(feats.device), len(classes), cfg.head, generator=gen)
        n = len(labels)
        if cfg.method == "montecarlo":
            res = montecarlo_fisher(
                self.probe.features,
                head,
                self.probe.filter_map,
                self._image_batches(subset, images),
                n_draws=cfg.n_draws,
                max_classes=cfg.max_classes,
                generator=_device_generator(self.device, cfg.seed + 1),
                autocast_dtype=torch.bfloat16 if cfg.amp else None,
            )
            trivial = prior_embedding(self.probe.features, self.probe.filter_map, cfg.trivial_n, cfg.beta)
        else:
            res = variational_fisher(
                self.probe.features,
                head,
                self.probe.filter_map,
                _LabelledBatches(self, subset, images, labels, cfg.seed + 2),
                n_samples=n,
                beta=cfg.beta,
                epochs=cfg.var_epochs,
                lr_precision=cfg.lr_precision,
                lr_head=cfg.head.lr,
                lr_prior=cfg.lr_prior,
                labels=cfg.var_labels,
                generator=_device_generator(self.device, cfg.seed + 1),
            )
            trivial = res.trivial
        meta = {
            "probe": self.probe.name,
            "method": cfg.method,
            "n_samples": n,
            "n_classes": len(classes),
            "head_accuracy": stats["train_accuracy"],
            "head_loss": stats["train_loss"],
            "seconds": time.perf_counter() - t0,
            "trivial": trivial,
            "domain": feats.mean(0).double().cpu().numpy(),
        }
        return TaskEmbedding(res.per_filter, self.probe.filter_map.layer_offsets, meta)

    def trivial_embedding(self, n_samples: int | None = None) -> np.ndarray:
        """t0 for this probe and config: the prior (β/2N)·λ² per filter (paper §3.1)."""
        return prior_embedding(
            self.probe.features, self.probe.filter_map, n_samples or self.config.trivial_n, self.config.beta
        )

    # ------------------------------------------------------------------------------------ internals
    def _select(self, dataset: Dataset, gen: torch.Generator):
        labels = _dataset_labels(dataset)
        if len(labels) == 0:
            raise ValueError("the task has no training images")
        idx = torch.arange(len(labels))
        if len(labels) > self.config.max_samples:
            idx = torch.randperm(len(labels), generator=gen)[: self.config.max_samples].sort().values
        # Remap labels to 0..C-1 in order of first appearance of the sorted ids: the embedding is
        # invariant to label permutations, and absent ids do not create empty classes.
        raw = labels[idx]
        classes, remapped = torch.unique(raw, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"the task has a single class ({int(classes[0])}): a classifier needs at least two"
            )
        return _Relabelled(Subset(dataset, idx.tolist()), remapped), remapped, classes

    @torch.no_grad()
    def _features(self, subset: Dataset) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Features of every selected image; keeps the decoded images when they fit in ~1 GB."""
        feats, images, keep = [], [], True
        budget = 2**30
        for x, _ in DataLoader(subset, batch_size=self.config.batch_size, shuffle=False):
            x = x.to(self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.config.amp):
                feats.append(self.probe.features(x).float())
            if keep:
                images.append(x)
                budget -= x.numel() * x.element_size()
                keep = budget > 0
        return (torch.cat(images) if keep else None), torch.cat(feats)

    def _image_batches(self, subset: Dataset, images: torch.Tensor | None):
        bs = self.config.batch_size
        if images is not None:
            return [images[s : s + bs] for s in range(0, images.shape[0], bs)]
        return (x.to(self.device) for x, _ in DataLoader(subset, batch_size=bs, shuffle=False))


class _LabelledBatches:
    """Re-iterable shuffled (x, y) batches for the variational estimator (one pass = one epoch)."""

    def __init__(self, t2v: Task2Vec, subset, images, labels, seed: int):
        self.t2v, self.subset, self.images, self.labels = t2v, subset, images, labels
        self.gen = torch.Generator().manual_seed(seed)

    def __iter__(self):
        bs, dev = self.t2v.config.batch_size, self.t2v.device
        order = torch.randperm(len(self.labels), generator=self.gen)
        for s in range(0, len(order), bs):
            idx = order[s : s + bs]
            if self.images is not None:
                x = self.images[idx.to(self.images.device)]
            else:
                x = torch.stack([self.subset[int(i)][0] for i in idx]).to(dev)
            yield x, self.labels[idx].to(dev)


class _Relabelled(Dataset):
    def __init__(self, base: Dataset, labels: torch.Tensor):
        self.base, self.labels = base, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.base[i][0], int(self.labels[i])


def _dataset_labels(dataset: Dataset) -> torch.Tensor:
    """Labels without decoding images when the dataset exposes them (``.labels`` / ``.targets``)."""
    for attr in ("labels", "targets"):
        if hasattr(dataset, attr):
            return torch.as_tensor(np.asarray(getattr(dataset, attr)), dtype=torch.long)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _device_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)
