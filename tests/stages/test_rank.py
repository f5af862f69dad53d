"""Ranking experts for a new task: order by d_asym computed by hand, and `t2v select rank` end to end."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from t2v_ray.core.distance import asymmetric_distance
from t2v_ray.data import storage
from t2v_ray.results.layout import ResultsPaths
from t2v_ray.stages.rank import folder_rows, load_store, rank_experts


def test_rank_order_matches_hand_computed_d_asym(synth):
    store = load_store(ResultsPaths.from_root(str(synth.root)))
    new = synth.vectors[5] * np.exp(0.05 * np.random.default_rng(3).standard_normal(synth.vectors.shape[1]))
    table = rank_experts(new, store, alpha=0.15)
    experts = synth.expert_vectors()
    by_hand = {
        e: asymmetric_distance(f, new, synth.trivial, 0.15)
        for e, f, s in zip(synth.expert_ids, experts, synth.sources, strict=True)
        if s
    }
    expected = sorted(by_hand, key=by_hand.get) + ["generic"]  # no source task: no distance, ranked last
    assert list(table["expert_id"]) == expected
    np.testing.assert_allclose(table["d_asym"].iloc[:-1], [by_hand[e] for e in expected[:-1]], rtol=1e-9)
    assert np.isnan(table["d_asym"].iloc[-1]) and table["rank"].tolist() == list(range(1, len(expected) + 1))
    # MODEL2VEC (fit on every grid task) scores every expert, the generic one included.
    assert np.isfinite(table["model2vec"]).all()
    assert sorted(table["model2vec_rank"]) == list(range(1, len(expected) + 1))
    by_m2v = rank_experts(new, store, by="model2vec")
    assert by_m2v["model2vec"].is_monotonic_increasing
    with pytest.raises(ValueError, match="another probe"):
        rank_experts(new[:5], store)


def _png(colour: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(colour + 40 * rng.standard_normal((32, 32, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _write_task_folder(root) -> None:
    for label, colour in (("cats", 60), ("dogs", 190)):
        (root / label).mkdir(parents=True)
        for k in range(6):
            (root / label / f"{k}.png").write_bytes(_png(colour, 10 * colour + k))


@pytest.fixture(scope="module")
def probe_results(tmp_path_factory, synth):
    """A results root whose embeddings have the dimension and weights hash of a random-init small_cnn."""
    from t2v_ray.config import to_dict
    from t2v_ray.core.heads import HeadConfig
    from t2v_ray.stages.embed import EmbedJobConfig
    from t2v_ray.stages.embed_worker import build_embedder
    from t2v_ray.task2vec import EmbedConfig

    root = tmp_path_factory.mktemp("probe_results")
    embed = EmbedConfig(max_samples=12, batch_size=12, head=HeadConfig(epochs=1, epoch_size=64))
    job = EmbedJobConfig(
        library=str(synth.root / "library"),
        probe="small_cnn",
        weights=None,
        input_size=32,
        out=str(root),
        embed=embed,
    )
    (root / "embed_config.yaml").write_text(yaml.safe_dump(to_dict(job)))
    probe, _ = build_embedder(job, "cpu")
    dim = probe.filter_map.n_filters
    rng = np.random.default_rng(0)
    rows = [
        {
            "task_id": t,
            "probe": "small_cnn",
            "probe_hash": probe.state_hash(),
            "method": "montecarlo",
            "status": "ok",
            "embedding": rng.gamma(2.0, 1.0, dim).astype(np.float32).tolist(),
            "trivial": [0.01] * dim,
        }
        for t in synth.task_ids
    ]
    storage.write_parquet_atomic(pa.Table.from_pylist(rows), str(root / "embeddings.parquet"))
    for name in ("grid.parquet", "experts.parquet"):
        (root / name).write_bytes((synth.root / name).read_bytes())
    task = root / "new_task"
    _write_task_folder(task)
    return root, task


def test_folder_task_rows(probe_results):
    _, task = probe_results
    rows = folder_rows(str(task))
    assert len(rows) == 12 and {r["label"] for r in rows} == {0, 1}
    assert all(r["image_id"].startswith("cats/") for r in rows if r["label"] == 0)


def test_select_rank_cli_embeds_and_ranks_in_seconds(probe_results, tmp_path):
    from t2v_ray.cli import app

    root, task = probe_results
    grid_before = (root / "grid.parquet").read_bytes()
    csv = tmp_path / "rank.csv"
    res = CliRunner().invoke(
        app,
        [
            "select",
            "rank",
            "--task",
            str(task),
            "--library-results",
            str(root),
            "--top",
            "3",
            "--csv",
            str(csv),
            "--device",
            "cpu",
        ],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    table = pd.read_csv(csv)
    assert len(table) == len(set(table["expert_id"])) == 14
    known = table["d_asym"].notna()
    assert (
        table.loc[known, "d_asym"].is_monotonic_increasing and not known.iloc[: known.sum()].eq(False).any()
    )
    for expert in table["expert_id"].iloc[:3]:
        assert expert in res.output
    assert table["expert_id"].iloc[4] not in res.output  # --top 3
    assert "Experts for new_task" in res.output
    assert (root / "grid.parquet").read_bytes() == grid_before  # read, never written


def test_rank_refuses_a_probe_with_other_weights(probe_results):
    from t2v_ray.cli import app

    root, task = probe_results
    other = root.parent / "other_probe"
    other.mkdir()
    for name in ("embed_config.yaml", "grid.parquet", "experts.parquet"):
        (other / name).write_bytes((root / name).read_bytes())
    emb = (
        storage.read_parquet(str(root / "embeddings.parquet"))
        .to_pandas()
        .assign(probe_hash="0123456789abcdef")
    )
    storage.write_parquet_atomic(
        pa.Table.from_pandas(emb, preserve_index=False), str(other / "embeddings.parquet")
    )
    res = CliRunner().invoke(
        app,
        ["select", "rank", "--task", str(task), "--library-results", str(other), "--device", "cpu"],
        env={"COLUMNS": "300"},
    )
    assert res.exit_code == 2 and "weights hash" in res.output


def test_rank_needs_a_task_and_results():
    from t2v_ray.cli import app

    res = CliRunner().invoke(app, ["select", "rank", "--task", "somewhere"], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "--library-results" in res.output
