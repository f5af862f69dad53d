"""Reading probe weights from a path, ``file://`` or ``s3://`` URI, and loading them strictly.

A checkpoint may hold the full classifier (feature extractor + last linear layer) or only the
feature extractor; ``split_head`` separates the two by the head's key prefix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch
from torch import nn

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
# Keys under which common training loops nest the state dict.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


def is_location(weights: str) -> bool:
    """True when ``weights`` names a file (path or URI) rather than a named weight set."""
    return (
        "://" in weights
        or weights.endswith(CHECKPOINT_SUFFIXES)
        or os.sep in weights
        or Path(weights).expanduser().is_file()
    )


def _s3_filesystem(uri: str):
    """(filesystem, path) for an ``s3://`` URI, honouring ``AWS_ENDPOINT_URL`` (MinIO, moto, ...)."""
    import pyarrow.fs as pafs

    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return pafs.FileSystem.from_uri(uri)
    parsed = urlparse(endpoint)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # Building S3FileSystem directly skips from_uri's region lookup, which would call real AWS.
    fs = pafs.S3FileSystem(
        endpoint_override=parsed.netloc or endpoint,
        scheme=parsed.scheme or "https",
        region=region,
    )
    target = urlparse(uri)
    return fs, target.netloc + target.path


def fetch_to_file(uri: str, directory: str) -> Path:
    """Copy a remote checkpoint (any pyarrow filesystem URI) into ``directory``; return its path."""
    import pyarrow.fs as pafs

    fs, path = _s3_filesystem(uri) if uri.startswith("s3://") else pafs.FileSystem.from_uri(uri)
    dest = Path(directory) / (Path(path).name or "weights.pth")
    with fs.open_input_stream(path) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, length=8 << 20)
    return dest


def _unwrap(obj: object, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source}: expected a state_dict (mapping of parameter names to tensors)")
    return dict(obj)


def read_state_dict(weights: str) -> dict[str, torch.Tensor]:
    """Load a state dict from a local path, ``file://`` URI or ``s3://`` (any pyarrow) URI.

    Args:
        weights: where the ``.pth``/``.pt`` file lives.

    Returns:
        The state dict, on CPU. Checkpoints nesting it under ``state_dict``/``model`` are unwrapped.
    """
    parsed = urlparse(weights)
    if parsed.scheme in ("", "file"):
        local = Path(unquote(parsed.path) if parsed.scheme == "file" else weights).expanduser()
        if not local.is_file():
            raise FileNotFoundError(f"weights file not found: {weights}")
        obj = torch.load(local, map_location="cpu", weights_only=True)
        return _unwrap(obj, weights)
    with tempfile.TemporaryDirectory(prefix="t2v-weights-") as tmp:
        local = fetch_to_file(weights, tmp)
        obj = torch.load(local, map_location="cpu", weights_only=True)
    return _unwrap(obj, weights)


def split_head(
    state: Mapping[str, torch.Tensor], head: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a full-model state dict into (feature-extractor keys, head keys without the prefix).

    Args:
        state: state dict of the full classifier or of the feature extractor alone.
        head: dotted module name of the last linear layer, e.g. ``fc`` or ``classifier.6``.
    """
    prefix = head + "."
    features = {k: v for k, v in state.items() if not k.startswith(prefix)}
    head_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return features, head_state


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], probe: str, source: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with an error that names the probe and the keys.

    Raises:
        ValueError: on missing keys, unexpected keys or shape mismatches (all listed).
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{label} ({len(keys)}): {_preview(keys)}"
            for label, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if keys
        ]
        raise ValueError(
            f"probe {probe!r}: weights from {source} do not match the architecture; " + "; ".join(parts)
        )
    module.load_state_dict(state, strict=True)


def build_head(head_state: Mapping[str, torch.Tensor], probe: str, source: str) -> nn.Linear:
    """A ``nn.Linear`` sized from the checkpoint's head weights and loaded from them."""
    if "weight" not in head_state or head_state["weight"].ndim != 2:
        raise ValueError(f"probe {probe!r}: head keys in {source} lack a 2-D 'weight': {sorted(head_state)}")
    out_features, in_features = head_state["weight"].shape
    linear = nn.Linear(in_features, out_features, bias="bias" in head_state)
    load_strict(linear, head_state, probe, source)
    return linear


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")
