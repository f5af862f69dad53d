"""Arrow schemas of a task library (DESIGN.md, "Task library format") and the names of its files."""

from __future__ import annotations

import pyarrow as pa

TASKS_FILE = "tasks.parquet"
SHARDS_DIR = "shards"
CONTACT_SHEET = "contact_sheet.png"
BUILD_CONFIG = "build_config.yaml"
SKIP_REPORT = "skipped.json"  # inputs the last build left out, with reasons (a JSON list of lines)
BUILD_STATE = "build_state.json"  # recipe hash per task, lets a rebuild skip producing unchanged tasks

KINDS = ("taxonomy", "attribute")
SPLITS = ("train", "test")

TASKS_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("taxonomy", pa.list_(pa.string()), nullable=False),
        pa.field("classes", pa.list_(pa.string()), nullable=False),
        pa.field("n_train", pa.int64(), nullable=False),
        pa.field("n_test", pa.int64(), nullable=False),
        pa.field("shards", pa.list_(pa.string()), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
    ]
)

# ``attributes`` is optional in a shard: free-form per-image metadata (font, character, source path...).
SHARD_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("attributes", pa.map_(pa.string(), pa.string()), nullable=True),
    ]
)
REQUIRED_SHARD_COLUMNS = ("task_id", "split", "label", "image", "image_id")


def missing_columns(schema: pa.Schema, required: pa.Schema | tuple[str, ...]) -> list[str]:
    """Names in ``required`` that ``schema`` lacks."""
    names = required.names if isinstance(required, pa.Schema) else list(required)
    return [n for n in names if n not in schema.names]


def type_mismatches(
    schema: pa.Schema, expected: pa.Schema, columns: tuple[str, ...] | None = None
) -> list[str]:
    """Human-readable ``column: got X, expected Y`` for columns present in both with incompatible types.

    Integer widths and string/large_string are accepted as compatible: they cast losslessly for our values.
    """
    out = []
    for field in expected:
        if columns is not None and field.name not in columns:
            continue
        if field.name not in schema.names:
            continue
        got = schema.field(field.name).type
        if not _compatible(got, field.type):
            out.append(f"{field.name}: got {got}, expected {field.type}")
    return out


def _compatible(got: pa.DataType, want: pa.DataType) -> bool:
    if got.equals(want):
        return True
    if pa.types.is_integer(want):
        return pa.types.is_integer(got)
    if pa.types.is_string(want):
        return pa.types.is_string(got) or pa.types.is_large_string(got)
    if pa.types.is_binary(want):
        return pa.types.is_binary(got) or pa.types.is_large_binary(got)
    if pa.types.is_list(want):
        return (pa.types.is_list(got) or pa.types.is_large_list(got)) and _compatible(
            got.value_type, want.value_type
        )
    return False
