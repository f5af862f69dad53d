"""Fashion-MNIST category tasks (DeepFashion-like attribute tasks on one shared domain) from the Debian package.

The idx files of ``dataset-fashion-mnist`` hold the official 60k/10k split; each task samples its train images
from the official train set and its test images from the official test set, per class (so the split is
stratified, seeded and never mixes the two).
"""

from __future__ import annotations

import gzip
import os
import time

import numpy as np
from PIL import Image

from t2v_ray.data import storage
from t2v_ray.data.builders.common import BuildSummary, finish_build, task_rng
from t2v_ray.data.images import encode_png
from t2v_ray.data.library import DEFAULT_SHARD_BYTES, LibraryWriter

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DATASET = "fashion-mnist"

# Groups of original categories, like DeepFashion's coarse attributes. Each becomes a binary "group vs rest" task.
GROUPS: dict[str, tuple[int, ...]] = {
    "upper-body": (0, 2, 4, 6),
    "footwear": (5, 7, 9),
    "long-sleeve": (2, 4),
    "full-length": (1, 3),
    "closed-shoe": (7, 9),
}
# Multi-class tasks over subsets of categories (fine-grained within a group) and over coarse groups.
MULTICLASS: dict[str, dict[str, tuple[int, ...]]] = {
    "category": {CLASSES[i]: (i,) for i in range(10)},
    "upper-body-type": {CLASSES[i]: (i,) for i in (0, 2, 4, 6)},
    "footwear-type": {CLASSES[i]: (i,) for i in (5, 7, 9)},
    "garment-group": {"top": (0, 2, 4, 6), "bottom-or-dress": (1, 3), "footwear": (5, 7, 9), "bag": (8,)},
}


def read_idx(path: str) -> np.ndarray:
    """Read an idx file: big-endian magic with the number of dims, then the sizes, then uint8 data.

    Gzip is detected by its magic bytes, not the name: the Debian package ships ``*.gz`` files that are not
    compressed.
    """
    raw = storage.read_bytes(path)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(root: str = DEFAULT_ROOT) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images N×28×28, labels N), "test": (...)}`` from the idx files under ``root``."""
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))
        if len(images) != len(labels):
            raise ValueError(f"{root}: {prefix} has {len(images)} images but {len(labels)} labels")
        out[split] = (images, labels)
    return out


def task_definitions() -> dict[str, tuple[list[str], list[tuple[int, ...]], list[str]]]:
    """``task name -> (class names, original categories per class, taxonomy path)``."""
    defs = {}
    for name, classes in MULTICLASS.items():
        defs[name] = (list(classes), list(classes.values()), [DATASET, name])
    for i, cname in enumerate(CLASSES):
        slug = cname.lower().replace("/", "-").replace(" ", "-")
        rest = tuple(j for j in range(10) if j != i)
        defs[f"is-{slug}"] = ([f"not {cname}", cname], [rest, (i,)], [DATASET, "one-vs-rest", cname])
    for name, members in GROUPS.items():
        rest = tuple(j for j in range(10) if j not in members)
        defs[f"group-{name}"] = ([f"not {name}", name], [rest, members], [DATASET, "group", name])
    return defs


def _draw(labels: np.ndarray, members: tuple[int, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices spread evenly over the original categories in ``members``, without replacement."""
    quota = -(-n // len(members))
    picked = [rng.permutation(np.flatnonzero(labels == m))[:quota] for m in members]
    return rng.permutation(np.concatenate(picked))[:n]


def _task_rows(data, members_per_class, n_train: int, test_fraction: float, rng) -> list[dict]:
    n_test = max(1, round(n_train * test_fraction / (1.0 - test_fraction)))
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = data[split]
        for label, members in enumerate(members_per_class):
            for idx in _draw(labels, members, n, rng):
                rows.append(
                    {
                        "split": split,
                        "label": label,
                        "image": encode_png(Image.fromarray(images[idx], "L")),
                        "image_id": f"{split}-{int(idx):05d}",
                        "attributes": {"category": CLASSES[int(labels[idx])]},
                    }
                )
    return rows


def build_fashion_mnist(
    out_uri: str,
    root: str = DEFAULT_ROOT,
    seed: int = 0,
    max_per_class: int = 600,
    min_per_class: int = 60,
    tail_alpha: float = 1.0,
    test_fraction: float = 0.2,
    tasks: list[str] | None = None,
    contact_sheet: bool = True,
    validate: bool = True,
    progress: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> BuildSummary:
    """Build Fashion-MNIST attribute tasks at ``out_uri``.

    Args:
        out_uri: library folder or S3 prefix.
        root: folder with the four idx ``.gz`` files.
        seed: drives task sizes, sampling and nothing else.
        max_per_class: cap on train images per class of a task (the size cap).
        min_per_class: lower bound of the heavy-tailed per-task size: train images per class are
            ``min(max, min * (1 + Lomax(alpha)))``, a Pareto tail like real task collections.
        tail_alpha: Pareto shape; larger means fewer big tasks.
        test_fraction: share of a class's images that are test images.
        tasks: restrict to these task names (see :func:`task_definitions`); None builds all.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    data = load_fashion_mnist(root)
    defs = task_definitions()
    unknown = set(tasks or []) - set(defs)
    if unknown:
        raise ValueError(f"unknown Fashion-MNIST tasks {sorted(unknown)}; known: {sorted(defs)}")
    writer = LibraryWriter(out_uri, shard_bytes=shard_bytes)
    for name in tqdm(
        [t for t in defs if tasks is None or t in tasks], desc="fashion-mnist tasks", disable=not progress
    ):
        classes, members, taxonomy = defs[name]
        task_id = f"{DATASET}/{name}"
        rng = task_rng(seed, task_id)
        n_train = int(min(max_per_class, min_per_class * (1.0 + rng.pareto(tail_alpha))))
        rows = _task_rows(data, members, n_train, test_fraction, rng)
        spec = {
            "task_id": task_id,
            "dataset": DATASET,
            "kind": "attribute",
            "taxonomy": taxonomy,
            "classes": classes,
        }
        writer.add_task(spec, rows)
    params = {"builder": "fashion-mnist", "root": root, "seed": seed, "max_per_class": max_per_class,
              "min_per_class": min_per_class, "tail_alpha": tail_alpha, "test_fraction": test_fraction,
              "tasks": tasks}  # fmt: skip
    return finish_build(writer, DATASET, started, None, validate, contact_sheet, config=params)
