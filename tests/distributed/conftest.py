"""Fixtures for the distributed stages: one local Ray session per test module and tiny synthetic libraries.

The synthetic library is built here rather than from the glyph builder so these tests depend only on the
library writer: a few 32 px RGB tasks whose classes differ in stripe frequency and colour, fast to embed.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

CORRUPT_IMAGE = b"\x89PNG-this-is-not-an-image"


def _image(rng: np.random.Generator, task: int, label: int, size: int = 32) -> bytes:
    # Stripe frequency encodes the class, hue the task: classes are separable, tasks differ in statistics.
    x = np.arange(size)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (label + 1) * x / size + rng.uniform(0, 2 * np.pi))
    grid = np.outer(np.ones(size), stripes) if label % 2 else np.outer(stripes, np.ones(size))
    colour = np.array([(task * 53) % 256, (task * 97 + 80) % 256, 200], dtype=np.float64) / 255
    arr = grid[:, :, None] * colour[None, None, :] + rng.normal(0, 0.08, (size, size, 3))
    buf = io.BytesIO()
    Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def build_synthetic_library(
    uri: str,
    n_tasks: int = 6,
    per_class: int = 24,
    corrupt_task: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Write a library of ``n_tasks`` tasks (2-3 classes, ``per_class`` train + 4 test images per class).

    Args:
        uri: library folder or ``s3://`` prefix.
        corrupt_task: index of a task whose 3rd training image is replaced by undecodable bytes.

    Returns:
        The task ids, in library order.
    """
    from t2v_ray.data.library import LibraryWriter

    writer = LibraryWriter(uri)
    ids = []
    for t in range(n_tasks):
        rng = np.random.default_rng([seed, t])
        n_classes = 2 + t % 2
        rows = []
        for c in range(n_classes):
            for i in range(per_class + 4):
                split = "train" if i < per_class else "test"
                rows.append(
                    {"split": split, "label": c, "image": _image(rng, t, c), "image_id": f"t{t}-c{c}-{i}"}
                )
        if t == corrupt_task:
            rows[2]["image"] = CORRUPT_IMAGE
        task_id = f"task-{t}"
        spec = {
            "task_id": task_id,
            "dataset": "synthetic",
            "kind": "taxonomy",
            "taxonomy": ["synthetic", f"group-{t % 2}", task_id],
            "classes": [f"c{c}" for c in range(n_classes)],
        }
        writer.add_task(spec, rows)
        ids.append(task_id)
    writer.finish()
    return ids


@pytest.fixture(scope="module")
def ray_session(s3_server) -> Iterator[None]:
    """A private local Ray instance (2 CPUs, no dashboard, own temp dir) shared by one test module.

    Depends on ``s3_server`` so the raylet, and every worker it spawns, inherits the moto credentials.
    """
    import ray

    # A short path: Ray's unix sockets live under the temp dir and are limited to ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="t2vray-", dir="/tmp")
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0", "RAY_TMPDIR": temp_dir}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
