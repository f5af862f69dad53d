"""Screening one task's rows before training: undecodable images are found up front, named exactly (task, shard,
row, image_id), and either dropped under the ``bad_rows`` policy or reported as the task's error."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from t2v_ray.data.images import ImageDecodeError, decode_image
from t2v_ray.data.library import TaskDataError


@dataclass
class Screened:
    """A task's rows after screening.

    Attributes:
        table: the rows whose image decodes.
        bad: one ``task ..., shard ..., row ..., image_id ...: reason`` line per dropped row.
        total: rows screened.
    """

    table: pa.Table
    bad: list[str] = field(default_factory=list)
    total: int = 0


def screen_rows(
    task_id: str, table: pa.Table, policy: str = "skip", max_bad_fraction: float = 0.01
) -> Screened:
    """Decode every image of ``table`` (from ``TaskLibrary.read_task(..., origin=True)``) once.

    Args:
        task_id: the task, for messages.
        table: its rows, with ``shard``/``shard_row`` columns when known.
        policy: ``skip`` drops bad rows while they are at most ``max_bad_fraction`` of the rows; ``fail``
            fails the task on the first bad row.
        max_bad_fraction: the share of bad rows ``skip`` tolerates (paper-scale tasks have a few broken files).

    Raises:
        TaskDataError: a bad row under ``fail``, or more bad rows than ``skip`` tolerates; the message names
            the first bad row and the count.
    """
    images = table.column("image").to_pylist()
    ids = table.column("image_id").to_pylist()
    shards = table.column("shard").to_pylist() if "shard" in table.column_names else [None] * len(images)
    rows = (
        table.column("shard_row").to_pylist()
        if "shard_row" in table.column_names
        else list(range(len(images)))
    )
    keep, bad, first = [], [], None
    for i, data in enumerate(images):
        try:
            decode_image(data, ids[i])
        except ImageDecodeError as err:
            problem = TaskDataError(task_id, f"image_id {ids[i]!r}: {err}", shard=shards[i], row=rows[i])
            first = first or problem
            bad.append(str(problem))
            continue
        keep.append(i)
    if first is not None:
        tolerated = policy == "skip" and len(bad) <= max_bad_fraction * len(images)
        if not tolerated:
            why = (
                "bad_rows=fail" if policy != "skip" else f"over {max_bad_fraction:.0%} of {len(images)} rows"
            )
            raise TaskDataError(
                task_id,
                f"{len(bad)} undecodable image(s) ({why}); first: {first.problem}",
                first.shard,
                first.row,
            )
    return Screened(table.take(pa.array(keep, pa.int64())) if bad else table, bad, len(images))
