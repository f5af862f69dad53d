"""Report outputs: Table 1 files, readable PNGs of the expected size, and the math behind Fig. 2."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from t2v_ray.core.distance import pairwise_symmetric
from t2v_ray.report.figures import cluster_order, correlations, embed_2d, neighbourhood_curve
from t2v_ray.report.tables import table_markdown
from t2v_ray.report.writer import metric_key, table_metrics, write_report

FIGURES = {  # name -> expected (width, height) in pixels at 120 dpi for 12 tasks
    "fig1_tsne.png": (1440, 660),
    "fig2_distance_matrix.png": None,
    "fig2_taxonomy_curve.png": (780, 576),
    "fig2_norm_vs_error.png": (780, 576),
    "fig3_violins.png": None,
}


@pytest.fixture(scope="module")
def written(evaluated, tmp_path_factory):
    table, details = evaluated
    out = tmp_path_factory.mktemp("report")
    return out, write_report(table, details, str(out))


def test_every_file_is_written(written):
    out, files = written
    expected = {"table1.csv", "table1.md", "picks.csv", "alpha_sweep.csv", *FIGURES}
    expected |= {"expert_margins.csv", "expert_margins.md"}
    assert set(files) == expected
    assert all((out / name).stat().st_size > 0 for name in expected)


def test_table1_csv_and_markdown_hold_the_table(written, evaluated):
    out, _ = written
    table, _ = evaluated
    csv = pd.read_csv(out / "table1.csv")
    assert list(csv["selector"]) == list(table["selector"])
    np.testing.assert_allclose(csv["rel_increase"], table["rel_increase"], rtol=1e-5)
    md = (out / "table1.md").read_text().splitlines()
    rows = [line for line in md if line.startswith("| ") and not line.startswith("| Selector")]
    assert len(rows) == len(table)
    generic = next(line for line in rows if line.startswith("| Generic "))
    g = table.set_index("selector").loc["Generic"]
    assert (
        f"+{100 * g['rel_increase']:.2f}% [+{100 * g['rel_increase_lo']:.2f}%, +{100 * g['rel_increase_hi']:.2f}%]"
        in generic
    )


def test_pngs_are_nontrivial_images_of_the_expected_size(written):
    out, _ = written
    for name, size in FIGURES.items():
        img = Image.open(out / name).convert("RGB")
        if size is not None:
            assert img.size == size, name
        else:
            assert min(img.size) >= 600, name
        pixels = np.asarray(img).astype(np.int64)
        colours = np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2])
        assert len(colours) > 50, f"{name} looks blank"
        assert (pixels < 250).any(axis=2).mean() > 0.01, f"{name} is almost all white"


def test_dendrogram_order_groups_planted_clusters(synth):
    order = cluster_order(pairwise_symmetric(synth.vectors))
    groups = [synth.groups[i] for i in order]
    # Each family occupies one contiguous run of the leaf order.
    runs = [g for k, g in enumerate(groups) if k == 0 or g != groups[k - 1]]
    assert sorted(runs) == sorted(set(synth.groups))
    assert sorted(order) == list(range(len(synth.vectors)))


def test_neighbourhood_curve_by_hand():
    # Tasks 0,1 are siblings (tax 2), 2,3 siblings; cross pairs are at tax 4.
    tax = np.array([[0, 2, 4, 4], [2, 0, 4, 4], [4, 4, 0, 2], [4, 4, 2, 0]])
    good = np.array([[0, 0.1, 0.9, 0.8], [0.1, 0, 0.7, 0.9], [0.9, 0.7, 0, 0.2], [0.8, 0.9, 0.2, 0]])
    np.testing.assert_allclose(neighbourhood_curve(good, tax, [1, 2, 3]), [2.0, 3.0, 10 / 3])
    np.testing.assert_allclose(neighbourhood_curve(tax, tax, [1, 2, 3]), [2.0, 3.0, 10 / 3])
    # A distance that inverts the taxonomy finds cross pairs first.
    np.testing.assert_allclose(neighbourhood_curve(-good + 1, tax, [1, 2]), [4.0, 4.0])


def test_embed_2d_separates_clusters_and_handles_tiny_inputs(synth):
    xy = embed_2d(pairwise_symmetric(synth.vectors), seed=0)
    assert xy.shape == (12, 2)
    g = np.array(synth.groups)
    within = np.mean([np.linalg.norm(xy[g == k] - xy[g == k].mean(0), axis=1).mean() for k in set(g)])
    centres = np.array([xy[g == k].mean(0) for k in sorted(set(g))])
    between = np.mean([np.linalg.norm(a - b) for a in centres for b in centres if a is not b])
    assert between > 2 * within
    assert embed_2d(np.array([[0.0, 1.0], [1.0, 0.0]])).shape == (2, 2)  # classical MDS below 5 points


def test_correlations_and_metric_names(evaluated):
    r, rho = correlations(np.arange(5.0), np.arange(5.0) ** 3)
    assert r == pytest.approx(
        np.corrcoef(np.arange(5.0), np.arange(5.0) ** 3)[0, 1]
    ) and rho == pytest.approx(1.0)
    assert np.isnan(correlations(np.ones(4), np.arange(4.0))[0])
    assert metric_key("Asym. Task2Vec (α sweep)") == "asym_task2vec_a_sweep"
    metrics = table_metrics(evaluated[0])
    assert metrics["optimal.regret"] == 0.0 and "chance.kendall_tau" not in metrics  # NaN left out
    assert "| Selector |" in table_markdown(evaluated[0])


def test_report_writes_to_s3_like_uris_through_storage(evaluated, monkeypatch):
    """Outputs go through t2v_ray.data.storage, so any URI it supports works (here: a recorded fake)."""
    from t2v_ray.report import writer

    table, details = evaluated
    got: dict[str, bytes] = {}
    monkeypatch.setattr(writer.storage, "write_bytes_atomic", lambda uri, data: got.__setitem__(uri, data))
    monkeypatch.setattr(writer, "_figures", lambda d: {})  # figures are covered above; keep this fast
    files = write_report(table, details, "s3://bucket/run/select")
    assert files["table1.csv"] == "s3://bucket/run/select/table1.csv"
    assert pd.read_csv(io.BytesIO(got["s3://bucket/run/select/table1.csv"]))["selector"].iloc[0] == "Optimal"
