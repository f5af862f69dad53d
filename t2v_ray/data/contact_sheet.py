"""A contact sheet: one row per task (a spread of tasks), one sample per class, so a human can eyeball a build."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

from t2v_ray.data import storage
from t2v_ray.data.images import ImageDecodeError, decode_image, flatten
from t2v_ray.data.library import LibraryError, TaskLibrary
from t2v_ray.data.schema import CONTACT_SHEET

CELL = 40
LABEL_WIDTH = 260


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when n <= k)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _samples(lib: TaskLibrary, task_id: str, per_task: int) -> list[Image.Image]:
    """First decodable train image of each class, up to ``per_task`` classes."""
    try:
        table = lib.read_task(task_id, split="train")
    except LibraryError:
        return []
    seen: dict[int, Image.Image] = {}
    for label, data in zip(table.column("label").to_pylist(), table.column("image").to_pylist(), strict=True):
        if label in seen:
            continue
        try:
            seen[label] = flatten(decode_image(data), "RGB")
        except ImageDecodeError:
            continue
        if len(seen) >= per_task:
            break
    return [seen[k] for k in sorted(seen)]


def render_contact_sheet(lib: TaskLibrary, max_tasks: int = 24, per_task: int = 12) -> Image.Image:
    """Draw the sheet: task id on the left, then one image per class scaled to a fixed cell."""
    specs = lib.tasks
    chosen = [specs[i] for i in _spread(len(specs), max_tasks)]
    sheet = Image.new("RGB", (LABEL_WIDTH + per_task * CELL, max(1, len(chosen)) * CELL), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, spec in enumerate(chosen):
        y = r * CELL
        draw.text(
            (4, y + CELL // 3),
            f"{spec.task_id} ({spec.kind}, {spec.num_classes} cl.)"[:42],
            fill="black",
            font=font,
        )
        for c, img in enumerate(_samples(lib, spec.task_id, per_task)):
            sheet.paste(img.resize((CELL - 4, CELL - 4)), (LABEL_WIDTH + c * CELL + 2, y + 2))
    return sheet


def write_contact_sheet(uri: str, max_tasks: int = 24, per_task: int = 12) -> str:
    """Render the sheet of the library at ``uri`` and store it as ``contact_sheet.png`` inside the library
    (local folder or S3 prefix alike); unchanged bytes are not rewritten. Returns its URI."""
    lib = TaskLibrary.open(uri)
    buf = io.BytesIO()
    render_contact_sheet(lib, max_tasks, per_task).save(buf, format="PNG")
    target = storage.join(uri, CONTACT_SHEET)
    storage.write_bytes_if_changed(target, buf.getvalue())
    return target
