"""Fine-tuning an expert feature extractor on a task (paper supplement §4.1). Pure torch: no Ray, no files.

Recipe: "first fixing the weights of the network and retraining from scratch only the final classifier for 10
epochs using Adam, and then fine-tuning all the network together with SGD for 60 epochs with weight decay 5e-4,
starting from learning rate 0.001 and decreasing it by a factor 0.1 at epochs 40." Every epoch draws
``epoch_size`` images (paper 10,000) with replacement, uniformly over classes.

The head-only phase trains on features computed once (the network is frozen and in eval mode then, so this is
exactly the same optimisation, minus the repeated forward passes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from t2v_ray.core.heads import balanced_indices, fit_softmax
from t2v_ray.core.settings import HeadConfig
from t2v_ray.train.extract import extract_features, labels_of
from t2v_ray.train.settings import ExpertTrainConfig


@dataclass
class ExpertResult:
    """The trained head (the network is trained in place), per-epoch curves and final metrics."""

    head: nn.Linear
    curves: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class _Images:
    """Index a dataset by a tensor of positions: from a decoded cache when it fits, else item by item."""

    def __init__(self, dataset: Dataset, preload_mb: int):
        self.dataset = dataset
        self.cache: torch.Tensor | None = None
        first = dataset[0][0]
        if len(dataset) * first.numel() * first.element_size() <= preload_mb * 2**20:
            self.cache = torch.stack([dataset[i][0] for i in range(len(dataset))])

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[idx]
        return torch.stack([self.dataset[int(i)][0] for i in idx])


def _batches(order: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for s in range(0, order.numel(), batch_size):
        yield order[s : s + batch_size]


def _train_head_phase(
    feats: torch.Tensor, labels: torch.Tensor, head: nn.Linear, cfg: ExpertTrainConfig, gen: torch.Generator
) -> list[float]:
    """The head alone on cached features (the shared head trainer; Adam, no weight decay); returns the mean
    loss of every epoch and leaves the trained weights in ``head``."""
    recipe = HeadConfig(
        epochs=cfg.head_epochs, epoch_size=cfg.epoch_size, batch_size=cfg.batch_size, lr=cfg.head_lr
    )
    w, losses = fit_softmax(feats, labels, head.out_features, recipe, gen, track_loss=True)
    with torch.no_grad():
        head.weight.copy_(w[:, :-1])
        head.bias.copy_(w[:, -1])
    return losses


@torch.no_grad()
def _error(model: nn.Module, images: _Images, labels: torch.Tensor, device: torch.device, bs: int) -> float:
    model.eval()
    wrong = 0
    for idx in _batches(torch.arange(labels.numel()), bs):
        wrong += int((model(images[idx].to(device)).argmax(1).cpu() != labels[idx]).sum())
    return wrong / max(labels.numel(), 1)


def _finetune_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    images: _Images,
    labels: torch.Tensor,
    cfg: ExpertTrainConfig,
    gen: torch.Generator,
    device: torch.device,
) -> tuple[float, float]:
    """One balanced epoch of SGD on the whole network; returns (mean loss, accuracy) over the drawn images."""
    model.train()
    if cfg.freeze_bn:
        # Keep the pre-trained running statistics: with small tasks and batches, train-mode BatchNorm swaps them
        # for noisy batch statistics and the fine-tuned features get worse than the generic ones.
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    total, correct, n = 0.0, 0, 0
    for idx in _batches(balanced_indices(labels, cfg.epoch_size, gen), cfg.batch_size):
        x, y = images[idx].to(device), labels[idx].to(device)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * idx.numel()
        correct += int((logits.argmax(1) == y).sum())
        n += idx.numel()
    return total / max(n, 1), correct / max(n, 1)


def train_expert(
    features: nn.Module,
    feature_dim: int,
    n_classes: int,
    train: Dataset,
    cfg: ExpertTrainConfig = ExpertTrainConfig(),
    test: Dataset | None = None,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[str, int, dict[str, float]], None] | None = None,
) -> ExpertResult:
    """Fine-tune ``features`` (in place) with a new ``n_classes`` head: head-only Adam, then whole-network SGD.

    Args:
        features: the pre-trained feature extractor, (B, 3, H, W) -> (B, ``feature_dim``).
        feature_dim: D.
        n_classes: classes of the (possibly merged) training task.
        train: yields ``(image_tensor, label)``; ``.labels`` avoids decoding images to read labels.
        cfg: the recipe's hyper-parameters.
        test: measured at the end (and every ``cfg.eval_every`` epochs); None skips it.
        device: where to train.
        on_epoch: called as ``on_epoch(phase, epoch, values)`` after every epoch (progress reporting).

    Returns:
        The head, curves ``head_loss`` (per head epoch), ``train_loss``/``train_acc``/``lr`` (per fine-tuning
        epoch), ``test_error`` (per evaluation), and final ``metrics``. ``features`` ends in eval mode.
    """
    start, device = time.perf_counter(), torch.device(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    features.to(device)
    labels = torch.from_numpy(labels_of(train))
    head = nn.Linear(feature_dim, n_classes).to(device)
    nn.init.zeros_(head.weight)  # "from scratch": start at the uniform prediction
    nn.init.zeros_(head.bias)
    cached = torch.from_numpy(extract_features(features, train, device=device).features).to(device)
    res = ExpertResult(head, {"head_loss": [], "train_loss": [], "train_acc": [], "lr": [], "test_error": []})
    res.curves["head_loss"] = _train_head_phase(cached, labels.to(device), head, cfg, gen)
    for e, v in enumerate(res.curves["head_loss"]):
        _notify(on_epoch, "head", e, {"head_loss": v})
    model = nn.Sequential(features, nn.Flatten(1), head)
    images = _Images(train, cfg.preload_mb)
    test_images = _Images(test, cfg.preload_mb) if test is not None and len(test) else None
    test_labels = torch.from_numpy(labels_of(test)) if test_images is not None else None
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma)
    for epoch in range(cfg.finetune_epochs):
        lr = opt.param_groups[0]["lr"]
        loss, acc = _finetune_epoch(model, opt, images, labels, cfg, gen, device)
        sched.step()
        values = {"train_loss": loss, "train_acc": acc, "lr": lr}
        last = epoch == cfg.finetune_epochs - 1
        if test_images is not None and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
            values["test_error"] = _error(model, test_images, test_labels, device, cfg.batch_size)
        for k, v in values.items():
            res.curves[k].append(v)
        _notify(on_epoch, "finetune", epoch, values)
    if test_images is not None and not res.curves["test_error"]:  # no fine-tuning epochs: head-only expert
        res.curves["test_error"].append(_error(model, test_images, test_labels, device, cfg.batch_size))
    model.eval()
    res.metrics = _final_metrics(res.curves, time.perf_counter() - start)
    return res


def merged_split(
    tables: list[Any], specs: list[Any], split: str, transform: Callable
) -> tuple[Dataset, list[str]]:
    """One dataset over several tasks' ``split`` (shard-schema tables); task k's labels follow tasks 0..k-1's.

    Returns:
        The dataset and the merged class names (``task/class`` when there are several tasks).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from t2v_ray.data.dataset import TaskDataset

    shifted, classes = [], []
    for table, spec in zip(tables, specs, strict=True):
        label = pc.add(table.column("label"), len(classes)).cast(pa.int32())
        shifted.append(table.set_column(table.schema.get_field_index("label"), "label", label))
        classes += [f"{spec.task_id}/{c}" for c in spec.classes] if len(specs) > 1 else list(spec.classes)
    return TaskDataset(pa.concat_tables(shifted), transform, split=split), classes


def full_state_dict(probe: Any, head: nn.Module | None) -> dict[str, torch.Tensor]:
    """The whole classifier's state dict, keyed as ``get_probe(name, weights=file)`` loads it back.

    The head goes under the probe's own head name (``fc``, ``classifier.6``, ...), so the expert's head becomes
    the loaded probe's ``source_head``.
    """
    from t2v_ray.probes.registry import head_name

    state = {k: v.detach().cpu() for k, v in probe.features.state_dict().items()}
    if head is not None:
        prefix = head_name(probe.name)
        state.update({f"{prefix}.{k}": v.detach().cpu() for k, v in head.state_dict().items()})
    return state


def _notify(cb: Callable | None, phase: str, epoch: int, values: dict[str, float]) -> None:
    if cb is not None:
        cb(phase, epoch, values)


def _final_metrics(curves: dict[str, list[float]], seconds: float) -> dict[str, float]:
    def last(key: str) -> float:
        return curves[key][-1] if curves[key] else math.nan

    return {
        "head_loss": last("head_loss"),
        "train_loss": last("train_loss"),
        "train_acc": last("train_acc"),
        "test_error": last("test_error"),
        "seconds": seconds,
    }
