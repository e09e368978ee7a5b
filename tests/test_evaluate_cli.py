"""`vaekit evaluate` with every optional section: JSON figures and the estimator plot."""

from __future__ import annotations

import json
import math

from conftest import DIGITS_ARGS


def test_evaluate_all_sections_on_a_gaussian_run(ring_run, cli, tmp_path):
    out = tmp_path / "e.json"
    res = cli("evaluate", ring_run, "--k", "5", "--loglik", "50", "--naive", "200", "--kde",
              "--kde-max-train", "200", "--diagnostics", "--json", out)
    assert res.code == 0, res.err
    r = json.loads(out.read_text())
    m = r["marginal"]
    assert m["importance"]["k"] == 50 and m["naive"]["k"] == 200
    assert 1 <= m["importance"]["ess_p5"] <= m["importance"]["ess_median"] <= 50
    assert math.isfinite(m["importance"]["log_px"]) and m["importance"]["bpd"] is None
    assert m["elbo_gap"]["mean"] > -0.5  # log p(x) >= ELBO, up to Monte-Carlo noise
    assert list(m["iwae_curve"]) == ["1", "10"]
    assert r["kde"]["kernel"] == "gaussian" and r["kde"]["bandwidth"] > 0
    assert len(r["kde"]["parzen"]["bandwidths"]) == 5
    assert "nats/example" in r["kde"]["parzen"]["note"]
    assert r["diagnostics"]["latent_dim"] == 2 and len(r["diagnostics"]["kl_per_dim"]) == 2
    assert (out.parent / "loglik-vs-K-test.png").stat().st_size > 1000
    for text in ("importance sampling", "naive estimator", "KDE baseline", "active"):
        assert text in res.out


def test_evaluate_bernoulli_run_reports_bits_per_dim_and_binary_kde(cli, tmp_path):
    run = tmp_path / "digits"
    assert cli("train", *DIGITS_ARGS, "--epochs", "1", "--out", run).code == 0
    res = cli("evaluate", run, "--k", "0", "--loglik", "20", "--naive", "100", "--kde",
              "--kde-max-train", "100")
    assert res.code == 0, res.err
    r = json.loads((run / "eval-test.json").read_text())
    imp, naive = r["marginal"]["importance"], r["marginal"]["naive"]
    dim = 64
    assert imp["bpd"] == (-imp["log_px"]) / (dim * math.log(2))
    assert 1 <= naive["ess_p5"] <= naive["ess_median"] <= 100
    assert r["kde"]["kernel"] == "bernoulli" and 0 < r["kde"]["bandwidth"] < 0.5
    assert "test set once with seed 1" in r["protocol"]
    assert "iwae" not in r  # --k 0 turns the IWAE figure off


def test_evaluate_rejects_negative_sample_counts(ring_run, cli):
    cli("evaluate", ring_run, "--loglik", "-5").assert_user_error("--loglik")
