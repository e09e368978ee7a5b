"""`vaekit evaluate` with every optional section: JSON figures and the estimator plot."""

from __future__ import annotations

import json
import math

import pytest
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


def test_evaluations_accumulate_and_name_their_checkpoint(ring_run, cli, tmp_path):
    import shutil

    run = shutil.copytree(ring_run, tmp_path / "run")
    assert cli("evaluate", run, "--k", "5", "--loglik", "20", "--diagnostics").code == 0
    first = json.loads((run / "eval-test.json").read_text())
    assert cli("evaluate", run, "--k", "10").code == 0  # a quick second look
    second = json.loads((run / "eval-test.json").read_text())
    assert second["iwae_k"] == 10
    assert second["marginal"] == first["marginal"]  # minutes of work are not thrown away
    assert second["diagnostics"] == first["diagnostics"]
    rec = second["checkpoint"]
    assert rec["epoch"] == 1 and len(rec["weights_sha256"]) == 16
    assert second["section_checkpoints"]["marginal"] == rec


def test_limit_scores_the_first_examples_into_a_file_of_its_own(ring_run, cli, tmp_path):
    import shutil

    import torch

    from vaekit.errors import ConfigError
    from vaekit.evaluation.estimators import estimate_log_px
    from vaekit.evaluation.suite import EvalOptions, evaluate_all
    from vaekit.rundir import RunDir

    run = shutil.copytree(ring_run, tmp_path / "run")
    res = cli("evaluate", run, "--k", "5", "--loglik", "20", "--limit", "30")
    assert res.code == 0, res.err
    r = json.loads((run / "eval-test-first30.json").read_text())
    assert r["n_examples"] == 30 and r["options"]["limit"] == 30
    assert not (run / "eval-test.json").exists()  # the whole split's figures stay apart
    assert (run / "loglik-vs-K-test-first30.png").is_file()
    assert "test set, 30 examples (its first ones: --limit)" in res.out
    rd = RunDir.open(run, "cpu")
    model, _, data = rd.model, rd.cfg, rd.data  # the same figure, by hand on those 30 examples
    est = estimate_log_px(model, data.test[:30], 20, seed=1)
    assert r["marginal"]["importance"]["log_px"] == pytest.approx(float(est.log_px.mean()),
                                                                  abs=1e-4)
    assert len(data.test) > 30 and torch.isfinite(est.log_px).all()
    cli("evaluate", run, "--limit", "30", "--kde").assert_user_error("--limit")
    res = cli("evaluate", run, "--k", "5", "--limit", str(len(data.test)))
    assert res.code == 0 and "covers the whole test split" in res.out
    assert json.loads((run / "eval-test.json").read_text())["n_examples"] == len(data.test)
    cli("evaluate", run, "--limit", "-1").assert_user_error("--limit")
    with pytest.raises(ConfigError, match="limit"):  # the library: not a silent x[:-1]
        evaluate_all(model, data, EvalOptions(limit=-1))


def test_outputs_never_replace_run_state_or_user_files(ring_run, cli, tmp_path, snapshot):
    import shutil

    run = shutil.copytree(ring_run, tmp_path / "run")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.npy").write_bytes(b"a user's data set")
    before = snapshot(tmp_path)
    cli("evaluate", run, "--json", run / "config.json").assert_user_error("run's own state")
    cli("evaluate", run, "--json", run / "checkpoint" / "trainer.json").assert_user_error(
        "run's own state")
    cli("evaluate", run, "--json", data).assert_user_error("suffix")
    cli("sample", run, "--out", data / "train.png").assert_user_error("--force")
    (data / "e.json").write_text("{}")
    before = snapshot(tmp_path)
    cli("evaluate", run, "--k", "5", "--json", data / "e.json").assert_user_error("--force")
    assert snapshot(tmp_path) == before
    assert cli("evaluate", run, "--k", "5", "--json", data / "e.json", "--force").code == 0
