"""Generation quality: Fréchet distance and precision/recall against direct computations and
under growing corruption, and the deterministic, content-addressed feature classifier."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from vaekit.data.datasets import load_dataset
from vaekit.evaluation.generation import (
    Recipe,
    feature_net,
    features,
    frechet_distance,
    precision_recall,
    unit_images,
)

RECIPE = Recipe(epochs=2, min_steps=400, width=8, features=32)


@pytest.fixture(scope="module")
def digits_features(tmp_path_factory):
    """The digits classifier (cached in a temporary cache) and the test images."""
    import os

    os.environ["VAEKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    ds = load_dataset("digits")
    net, info = feature_net(ds.train, ds.train_y, ds.test, ds.test_y, ds.levels, RECIPE,
                            log=lambda _: None)
    return net, info, unit_images(ds.test, ds.levels)


def test_frechet_distance_matches_scipy_and_is_a_distance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g, dtype=torch.float64)
    mix = torch.rand(6, 6, generator=g, dtype=torch.float64)
    b = torch.randn(300, 6, generator=g, dtype=torch.float64) @ mix + 1
    ma, mb, sa, sb = a.mean(0), b.mean(0), np.cov(a.T.numpy()), np.cov(b.T.numpy())
    covmean = scipy.linalg.sqrtm(sa @ sb).real
    direct = float((ma - mb).pow(2).sum()) + np.trace(sa + sb - 2 * covmean)
    assert frechet_distance(a, b) == pytest.approx(direct, rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(direct, rel=1e-8)
    assert abs(frechet_distance(a, a)) < 1e-9


def test_classifier_is_deterministic_and_cached(digits_features, tmp_path, monkeypatch):
    net, info, _ = digits_features
    assert info["test_accuracy"] > 0.8 and len(info["hash"]) == 64
    ds = load_dataset("digits")
    _, info2 = feature_net(ds.train, ds.train_y, ds.test, ds.test_y, ds.levels, RECIPE)
    assert info2 == info  # from the cache: same hash, same record
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path))  # an empty cache: trained again
    fresh, info3 = feature_net(ds.train, ds.train_y, ds.test, ds.test_y, ds.levels, RECIPE,
                               log=lambda _: None)
    assert info3["hash"] == info["hash"]
    for (k, v), w in zip(net.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(v, w), k  # same data and recipe, same weights


def test_scores_grow_with_noise_and_blur(digits_features):
    net, _, test = digits_features
    real = features(net, test)
    g = torch.Generator().manual_seed(0)
    fd_noise, prec, rec = [], [], []
    for sigma in (0.0, 0.1, 0.25, 0.5, 1.0):
        noisy = (test + sigma * torch.randn(test.shape, generator=g)).clamp(0, 1)
        fake = features(net, noisy)
        fd_noise.append(frechet_distance(real, fake))
        p, r = precision_recall(real, fake)
        prec.append(p)
        rec.append(r)
    assert fd_noise[0] < 1e-6 and fd_noise == sorted(fd_noise) and fd_noise[-1] > 1
    assert prec[0] == rec[0] == 1.0  # identical sets
    assert prec == sorted(prec, reverse=True) and rec == sorted(rec, reverse=True)
    assert prec[-1] < 0.6 and rec[-1] < 0.7  # measured: 0.42 and 0.52 at sigma = 1
    fd_blur = []
    for k in (1, 3, 5):
        blurred = torch.nn.functional.avg_pool2d(test[:, None], k, 1, k // 2)[:, 0]
        fd_blur.append(frechet_distance(real, features(net, blurred)))
    assert fd_blur[0] < 1e-6 and fd_blur == sorted(fd_blur) and fd_blur[-1] > fd_blur[1] > 0


def test_standard_fid_needs_local_weights(tmp_path, ring_run, cli):
    from vaekit.errors import ConfigError
    from vaekit.evaluation.generation import inception_fid

    x = torch.rand(4, 8, 8)
    with pytest.raises(ConfigError, match="do not exist"):
        inception_fid(x, x, tmp_path / "missing.pt")
    cli("evaluate", ring_run, "--generation", "10", "--inception-weights",
        tmp_path / "missing.pt").assert_user_error("--inception-weights")
