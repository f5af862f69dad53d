"""Transparent images keep their shape (issue 11, item 4): clip art is often black line art whose only signal is
the alpha channel; ``convert("RGB")`` drops alpha and leaves black on black. Every decode path composites onto
a background (white unless configured): the torch dataset, the probe transform, the import and its contact sheet."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from t2v_ray.cli import app
from t2v_ray.data.contact_sheet import CELL, LABEL_WIDTH
from t2v_ray.data.dataset import TaskDataset
from t2v_ray.data.images import encode_png
from t2v_ray.data.library import TaskLibrary
from t2v_ray.imaging import flatten
from t2v_ray.probes.transforms import ToRGB, build_transform

SIDE = 16


def line_art(alpha_value: int = 255, seed: int = 0) -> Image.Image:
    """Black RGB everywhere; alpha draws a cross (``alpha_value``) on a transparent field (0), plus a seeded dot
    so that images differ."""
    alpha = np.zeros((SIDE, SIDE), dtype=np.uint8)
    alpha[SIDE // 2, :] = alpha[:, SIDE // 2] = alpha_value
    alpha[seed % SIDE, (seed * 7) % SIDE] = alpha_value
    rgba = np.zeros((SIDE, SIDE, 4), dtype=np.uint8)
    rgba[..., 3] = alpha
    return Image.fromarray(rgba, "RGBA")


def _expected(alpha: np.ndarray, background: float = 1.0) -> np.ndarray:
    # out = a * fg + (1 - a) * bg with fg = 0 (black ink): bg * (1 - a), a = alpha / 255.
    return background * (1.0 - alpha.astype(np.float64) / 255.0)


def test_dataset_composites_alpha_onto_white():
    img = line_art(alpha_value=255)
    alpha = np.asarray(img)[..., 3]
    ds = TaskDataset([{"image": encode_png(img), "label": 0, "split": "train"}])
    x, _ = ds[0]
    assert x.shape == (3, SIDE, SIDE)
    for c in range(3):  # white paper, black cross: the shape is in the pixels, not a blank
        np.testing.assert_allclose(x[c].numpy(), _expected(alpha), atol=1e-6)
    assert float(x.std()) > 0.3


def test_half_transparent_ink_blends_by_the_closed_form():
    img = line_art(alpha_value=128)
    (x, _) = TaskDataset([{"image": encode_png(img), "label": 0}], split=None)[0]
    # 255 * (1 - 128/255) = 127 grey levels on the cross, 255 elsewhere.
    assert sorted({round(float(v) * 255) for v in x.flatten()}) == [127, 255]


def test_probe_transform_composites_and_the_background_is_configurable():
    img = line_art()
    alpha = np.asarray(img)[..., 3]
    norm = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # identity normalisation: tensor values are pixel values
    x = build_transform(SIDE, *norm)(img)
    torch.testing.assert_close(x[0], torch.from_numpy(_expected(alpha)).float(), atol=1e-6, rtol=0)
    red = np.asarray(ToRGB(background=(255, 0, 0))(img))
    assert (red[alpha == 0] == (255, 0, 0)).all() and (red[alpha == 255] == 0).all()
    grey = build_transform(SIDE, *norm, background="#808080")(img)
    assert torch.allclose(grey[1][torch.from_numpy(alpha == 0)], torch.tensor(128 / 255))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: Image.merge("LA", [Image.new("L", a.size, 0), a]), id="LA"),
        pytest.param(lambda a: _palette_with_transparency(a), id="P+tRNS"),
        pytest.param(lambda a: _grey_with_transparent_value(a), id="L+tRNS"),
    ],
)
def test_every_kind_of_transparency_is_composited(make):
    alpha = line_art().getchannel("A")
    img = Image.open(io.BytesIO(encode_png(make(alpha))))  # through PNG, as the library stores it
    got = np.asarray(flatten(img, "RGB"))
    want = np.where(np.asarray(alpha)[..., None] == 255, 0, 255)
    np.testing.assert_array_equal(got, np.broadcast_to(want, got.shape))


def _palette_with_transparency(alpha: Image.Image) -> Image.Image:
    p = Image.fromarray((np.asarray(alpha) == 255).astype(np.uint8), "P")  # index 1 = ink, 0 = transparent
    p.putpalette([9, 9, 9, 0, 0, 0])  # the transparent entry has a colour too: it must not show
    p.info["transparency"] = 0
    return p


def _grey_with_transparent_value(alpha: Image.Image) -> Image.Image:
    grey = Image.fromarray(np.where(np.asarray(alpha) == 255, 0, 200).astype(np.uint8), "L")
    grey.info["transparency"] = 200
    return grey


def test_imported_line_art_is_not_blank(tmp_path):
    root = tmp_path / "clipart"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            line_art(seed=i + (10 if cls == "b" else 0)).save(root / cls / f"{i}.png")
    big = np.zeros((2000, 2000, 4), dtype=np.uint8)
    big[:, 990:1010, 3] = 255  # large enough to be downscaled (and re-encoded) on import
    Image.fromarray(big, "RGBA").save(root / "a" / "big.png")
    out = tmp_path / "lib"
    args = ["library", "import-folder", str(root), "--out", str(out), "--min-images", "3"]
    assert CliRunner().invoke(app, args).exit_code == 0
    ds = TaskDataset(TaskLibrary.open(str(out)).read_task("clipart"), split=None)
    means = {ds.image_ids[i]: float(ds[i][0].mean()) for i in range(len(ds))}
    # White paper with a thin cross: mostly white, never a black blank.
    assert all(m > 0.8 for m in means.values()), means
    assert 0.95 < means["a/big.png"] < 1.0
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("L"), dtype=float) / 255
    cells = sheet[2 : CELL - 2, LABEL_WIDTH + 2 : LABEL_WIDTH + 2 * CELL - 2]  # the two class samples
    assert cells.mean() > 0.8  # white paper with ink, not black squares
