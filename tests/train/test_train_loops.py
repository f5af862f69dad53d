"""Training loops on CPU, no Ray: classifier on cached features, expert fine-tuning, feature pass, scores."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from t2v_ray.probes import get_probe
from t2v_ray.results.features import FeatureSet
from t2v_ray.train.classifier import ClassifierConfig, fit_classifier
from t2v_ray.train.extract import extract_features
from t2v_ray.train.finetune import ExpertTrainConfig, full_state_dict, train_expert
from t2v_ray.train.scores import transfer_scores


class _Quadrants(Dataset):
    """32 px noise with a bright 6 px square in one of 4 quadrants (the label); ``.labels`` like TaskDataset."""

    def __init__(self, n_per_class: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.labels = np.repeat(np.arange(4), n_per_class)
        self.images = torch.rand(len(self.labels), 3, 32, 32, generator=g) * 0.3
        for i, c in enumerate(self.labels):
            y, x = (int(c) // 2) * 16, (int(c) % 2) * 16
            oy, ox = (int(v) for v in torch.randint(2, 8, (2,), generator=g))
            self.images[i, :, y + oy : y + oy + 6, x + ox : x + ox + 6] = 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


def _blobs(n: int, d: int, c: int, seed: int, sep: float) -> FeatureSet:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    centers = np.random.default_rng(99).normal(0, sep, (c, d))
    return FeatureSet(centers[labels] + rng.normal(0, 1, (n, d)).astype(np.float32), labels.astype(np.int64))


def test_classifier_defaults_are_the_papers():
    cfg = ClassifierConfig()
    assert (cfg.epochs, cfg.epoch_size, cfg.lr, cfg.weight_decay, cfg.balanced) == (
        16,
        10_000,
        1e-4,
        5e-4,
        True,
    )


def test_classifier_separates_separable_features_and_not_noise():
    cfg = ClassifierConfig(epochs=3, epoch_size=600, lr=1e-2)
    good = fit_classifier(_blobs(300, 16, 3, 0, sep=4.0), _blobs(90, 16, 3, 1, sep=4.0), 3, cfg)
    assert good.test_error < 0.05 and good.train_error < 0.05
    noise = _blobs(300, 16, 3, 0, sep=0.0)
    shuffled = FeatureSet(noise.features, np.random.default_rng(5).permutation(noise.labels))
    bad = fit_classifier(shuffled, _blobs(300, 16, 3, 2, sep=0.0), 3, cfg)
    assert bad.test_error > 0.45  # chance is 2/3
    assert good.steps == 3 * math.ceil(600 / cfg.batch_size)


def test_classifier_reports_its_test_set_size_and_the_binomial_se_of_its_error():
    cfg = ClassifierConfig(epochs=1, epoch_size=256, lr=1e-2)
    res = fit_classifier(_blobs(90, 8, 3, 0, 0.5), _blobs(75, 8, 3, 1, 0.5), 3, cfg)
    assert res.n_test == 75 and 0 < res.test_error < 1
    assert res.test_error_se == pytest.approx(
        math.sqrt(res.test_error * (1 - res.test_error) / 75), rel=1e-12
    )
    empty = FeatureSet(np.zeros((0, 8), np.float32), np.zeros(0, np.int64))
    none = fit_classifier(_blobs(90, 8, 3, 0, 0.5), empty, 3, cfg)
    assert none.n_test == 0 and math.isnan(none.test_error) and math.isnan(none.test_error_se)


def test_classifier_is_reproducible_from_its_seed():
    cfg = ClassifierConfig(epochs=1, epoch_size=256, lr=1e-2, seed=3)
    a = fit_classifier(_blobs(90, 8, 3, 0, 1.0), _blobs(60, 8, 3, 1, 1.0), 3, cfg)
    b = fit_classifier(_blobs(90, 8, 3, 0, 1.0), _blobs(60, 8, 3, 1, 1.0), 3, cfg)
    assert (a.test_error, a.train_loss) == (b.test_error, b.train_loss)


def test_extract_features_keeps_order_restores_mode_and_gives_probabilities():
    probe = get_probe("small_cnn")
    head = nn.Linear(probe.feature_dim, 5)
    data = _Quadrants(3, seed=0)
    probe.features.train()
    fs = extract_features(probe.features, data, source_head=head, batch_size=5)
    assert probe.features.training  # put back as found
    assert fs.features.shape == (12, probe.feature_dim) and fs.source_probs.shape == (12, 5)
    np.testing.assert_array_equal(fs.labels, data.labels)
    np.testing.assert_allclose(fs.source_probs.sum(1), 1.0, rtol=1e-5)
    probe.features.eval()
    with torch.no_grad():
        expected = probe.features(data.images[7:8]).numpy()
    np.testing.assert_allclose(fs.features[7:8], expected, rtol=1e-4, atol=1e-5)


def test_expert_defaults_are_the_papers():
    cfg = ExpertTrainConfig()
    assert (cfg.head_epochs, cfg.finetune_epochs, cfg.lr, cfg.weight_decay) == (10, 60, 1e-3, 5e-4)
    assert (cfg.lr_milestones, cfg.lr_gamma, cfg.epoch_size) == ((40,), 0.1, 10_000)


def test_head_only_phase_leaves_the_network_untouched():
    probe = get_probe("small_cnn")
    before = copy.deepcopy(probe.features.state_dict())
    cfg = ExpertTrainConfig(head_epochs=2, head_lr=1e-2, finetune_epochs=0, epoch_size=64, batch_size=16)
    res = train_expert(probe.features, probe.feature_dim, 4, _Quadrants(4, 0), cfg, _Quadrants(2, 1))
    for k, v in probe.features.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert len(res.curves["head_loss"]) == 2 and res.curves["train_loss"] == []
    assert res.head.weight.abs().sum() > 0  # the head did train
    assert 0.0 <= res.metrics["test_error"] <= 1.0


def test_finetuning_follows_the_step_schedule_and_learns_the_task():
    torch.manual_seed(0)
    probe = get_probe("small_cnn")
    generic = copy.deepcopy(probe.features)
    train, test = _Quadrants(24, seed=0), _Quadrants(8, seed=1)
    cfg = ExpertTrainConfig(
        head_epochs=1,
        head_lr=1e-2,
        finetune_epochs=6,
        lr=0.05,
        lr_milestones=(4,),
        epoch_size=256,
        batch_size=32,
    )
    res = train_expert(probe.features, probe.feature_dim, 4, train, cfg, test)
    torch.testing.assert_close(torch.tensor(res.curves["lr"]), torch.tensor([0.05] * 4 + [0.005] * 2))
    assert len(res.curves["train_loss"]) == 6 and res.curves["train_loss"][-1] < res.curves["train_loss"][0]
    assert not probe.features.training
    # The fine-tuned network's features make the task linear; the untouched random network's barely do.
    ccfg = ClassifierConfig(epochs=4, epoch_size=512, batch_size=32, lr=1e-2)

    def err(net: nn.Module) -> float:
        return fit_classifier(extract_features(net, train), extract_features(net, test), 4, ccfg).test_error

    assert err(probe.features) < err(generic) - 0.3


def test_full_state_dict_round_trips_through_get_probe(tmp_path):
    probe = get_probe("small_cnn")
    head = nn.Linear(probe.feature_dim, 3)
    path = tmp_path / "w.pt"
    torch.save(full_state_dict(probe, head), path)
    loaded = get_probe("small_cnn", weights=str(path))
    assert loaded.state_hash() == probe.state_hash()
    torch.testing.assert_close(loaded.source_head.weight, head.weight.detach())


def test_transfer_scores_need_source_probabilities_for_leep_and_nce():
    fs = _blobs(120, 6, 3, 0, sep=3.0)
    no_head = transfer_scores(fs)
    assert math.isfinite(no_head["logme"]) and math.isfinite(no_head["h_score"])
    assert math.isnan(no_head["leep"]) and math.isnan(no_head["nce"])
    probs = np.eye(3, dtype=np.float32)[fs.labels] * 0.9 + 0.1 / 3  # a source head that predicts the labels
    scores = transfer_scores(FeatureSet(fs.features, fs.labels, probs))
    assert scores["nce"] == pytest.approx(0.0, abs=1e-9)  # labels are a function of the source argmax
    assert scores["leep"] > math.log(1 / 3)


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_freeze_bn_keeps_the_pretrained_running_statistics(freeze_bn):
    # Fine-tuning in train mode replaces BatchNorm running statistics by batch statistics (momentum 0.1);
    # freeze_bn keeps them, while the conv weights still learn.
    probe = get_probe("small_cnn")
    bns = {n: m for n, m in probe.features.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert bns, "small_cnn should have BatchNorm layers"
    stats = {n: (m.running_mean.clone(), m.num_batches_tracked.clone()) for n, m in bns.items()}
    convs = [m for m in probe.features.modules() if isinstance(m, nn.Conv2d)]
    w0 = convs[0].weight.detach().clone()
    cfg = ExpertTrainConfig(
        head_epochs=1,
        head_lr=1e-2,
        finetune_epochs=1,
        lr=0.05,
        epoch_size=64,
        batch_size=16,
        freeze_bn=freeze_bn,
    )
    train_expert(probe.features, probe.feature_dim, 4, _Quadrants(4, 0), cfg)
    unchanged = all(
        torch.equal(m.running_mean, stats[n][0]) and torch.equal(m.num_batches_tracked, stats[n][1])
        for n, m in bns.items()
    )
    assert unchanged is freeze_bn
    assert not torch.equal(convs[0].weight, w0)
