"""Pieces every builder shares: seeded stratified splits, PNG encoding, and the end of a build (validate,
contact sheet, summary)."""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from t2v_ray.data import storage
from t2v_ray.data.images import encode_png  # noqa: F401  (re-exported for builders)
from t2v_ray.data.library import LibraryWriter, TaskSpec, WriteStats
from t2v_ray.data.schema import BUILD_CONFIG, SKIP_REPORT
from t2v_ray.data.validate import ValidationReport, validate_library


def task_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys`` (not on build order or process)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def stratified_split(labels: Sequence[int], test_fraction: float, rng: np.random.Generator) -> list[str]:
    """``"train"``/``"test"`` per row; per class, ``round(n * test_fraction)`` test rows, at least one of each
    split when the class has two or more rows."""
    labels = np.asarray(labels)
    out = np.full(len(labels), "train", dtype=object)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = n_test_rows(len(idx), test_fraction)
        out[rng.permutation(idx)[:n_test]] = "test"
    return out.tolist()


def split_groups(groups: Sequence[str], test_fraction: float, rng: np.random.Generator) -> set[str]:
    """The groups (e.g. font families) whose images are test images: ``round(n_groups * test_fraction)`` of
    them, at least one and never all; empty when there are fewer than two groups (the caller splits rows)."""
    names = sorted(set(groups))
    if len(names) < 2:
        return set()
    n_test = min(max(1, round(len(names) * test_fraction)), len(names) - 1)
    return set(rng.permutation(np.array(names, dtype=object))[:n_test].tolist())


def n_test_rows(n: int, frac: float) -> int:
    """Test rows of a plain split of ``n`` rows: ``round(n * frac)``, at least one of each split when n >= 2."""
    if n < 2 or frac <= 0:
        return 0
    return min(max(1, round(n * frac)), n - 1)


@dataclass
class BuildSummary:
    """What a build produced; ``table()`` renders it for the terminal."""

    uri: str
    dataset: str
    tasks: list[TaskSpec]
    seconds: float
    size_bytes: int
    validation: ValidationReport | None
    stats: WriteStats
    skipped: list[str] = field(default_factory=list)
    contact_sheet: str | None = None

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def n_images(self) -> int:
        return sum(t.n_images for t in self.tasks)

    def tasks_by_kind(self) -> dict[str, list[TaskSpec]]:
        out: dict[str, list[TaskSpec]] = defaultdict(list)
        for t in self.tasks:
            out[t.kind].append(t)
        return dict(out)

    def table(self):
        """A rich ``Table``: tasks, classes and images per (dataset, kind), then totals."""
        from rich.table import Table

        t = Table(title=f"{self.dataset} library at {self.uri}")
        for col in (
            "dataset / kind",
            "tasks",
            "classes (min-max)",
            "images/task (min / median / max)",
            "images",
        ):
            t.add_column(col, justify="left" if col.startswith("dataset") else "right")
        groups: dict[tuple[str, str], list[TaskSpec]] = defaultdict(list)
        for s in self.tasks:
            groups[(s.dataset, s.kind)].append(s)
        for (ds, kind), specs in sorted(groups.items()):
            sizes = [s.n_images for s in specs]
            cls = [s.num_classes for s in specs]
            t.add_row(
                f"{ds} / {kind}",
                str(len(specs)),
                f"{min(cls)}-{max(cls)}",
                f"{min(sizes)} / {int(statistics.median(sizes))} / {max(sizes)}",
                f"{sum(sizes):,}",
            )
        t.add_section()
        t.add_row("total", str(self.n_tasks), "", "", f"{self.n_images:,}")
        t.caption = (
            f"built in {self.seconds:.1f} s · {self.size_bytes / 2**20:.1f} MiB · shards written "
            f"{self.stats.shards_written}, reused {self.stats.shards_reused}, pruned {self.stats.shards_pruned}"
            + (f" · validation: {self.validation.summary()}" if self.validation else "")
            + (f" · skipped inputs: {len(self.skipped)}" if self.skipped else "")
            + (f" · contact sheet: {self.contact_sheet}" if self.contact_sheet else "")
        )
        return t


def read_skip_report(uri: str) -> list[str]:
    """The skip report of the library at ``uri`` (empty when its build left nothing out or predates the report)."""
    target = storage.join(uri, SKIP_REPORT)
    return json.loads(storage.read_bytes(target)) if storage.exists(target) else []


def library_size(uri: str) -> int:
    """Total bytes of ``tasks.parquet`` and the shards."""
    return sum(size for rel, size in storage.list_files(uri) if rel.endswith(".parquet"))


def finish_build(
    writer: LibraryWriter,
    dataset: str,
    started: float,
    skipped: list[str] | None = None,
    validate: bool = True,
    contact_sheet: bool = True,
    config: dict | None = None,
) -> BuildSummary:
    """Write ``tasks.parquet``, validate the library, draw the contact sheet and summarise.

    ``config`` (the resolved build parameters) is saved as ``build_config.yaml`` next to ``tasks.parquet``, and
    ``skipped`` (what the build left out, one ``"what: why"`` line each) as ``skipped.json``.
    """
    specs = writer.finish()
    skipped = list(skipped or [])
    skip_text = json.dumps(skipped, indent=1, ensure_ascii=False) + "\n"
    storage.write_bytes_if_changed(storage.join(writer.uri, SKIP_REPORT), skip_text.encode())
    if config is not None:
        import yaml

        text = yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False)
        storage.write_bytes_if_changed(storage.join(writer.uri, BUILD_CONFIG), text.encode())
    report = validate_library(writer.uri) if validate else None
    sheet = None
    if contact_sheet and specs:
        from t2v_ray.data.contact_sheet import write_contact_sheet

        sheet = write_contact_sheet(writer.uri)
    return BuildSummary(
        uri=writer.uri,
        dataset=dataset,
        tasks=specs,
        seconds=time.perf_counter() - started,
        size_bytes=library_size(writer.uri),
        validation=report,
        stats=writer.stats,
        skipped=skipped,
        contact_sheet=sheet,
    )
