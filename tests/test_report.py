"""Figures and the HTML report: what a person opening them would check.

The report of a run is one HTML file that parses, has every section, embeds only images
that decode, and refers to nothing on the network; a real browser (Debian's chromium,
installed by the set-up: ``scripts/setup.sh --with-browser``, which CI runs; elsewhere the
browser tests skip with that reason, in CI they fail) renders it without console errors
and without horizontal overflow on a narrow screen. The figures have the panels they
promise and apply where they make sense; the ring demo's learned density sits on the ring.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DIGITS_ARGS, RING_ARGS
from PIL import Image

from vaekit.demo import circle, ring_contrast
from vaekit.report import FIGURES, applicable, load_context, panels

SECTIONS = {"command", "configuration", "data", "metrics", "figures"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Collect(HTMLParser):
    """Every start tag with its attributes, the text of <style> elements, and the data."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        (self.styles if self._in_style else self.text).append(data)


def parse_report(path: Path) -> _Collect:
    parser = _Collect()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def assert_self_contained(path: Path) -> _Collect:
    """Parses; no scripts, external styles or frames; every image an embedded PNG that
    decodes; no http(s) reference in any src, href or CSS url(...)."""
    doc = parse_report(path)
    names = [tag for tag, _ in doc.tags]
    assert names[0] == "html" and "body" in names
    assert not {"script", "link", "iframe", "object", "embed"} & set(names)
    images = [attrs["src"] for tag, attrs in doc.tags if tag == "img"]
    assert images, "no figures embedded"
    for src in images:
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64", head[:40]
        png = base64.b64decode(data, validate=True)
        assert png.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
    css = " ".join(doc.styles) + " ".join(a.get("style", "") for _, a in doc.tags)
    refs = [a.get(k, "") for _, a in doc.tags for k in ("src", "href", "action", "poster")]
    refs += re.findall(r"url\(([^)]*)\)", css)
    assert not [r for r in refs if re.match(r"\s*['\"]?\s*(https?:)?//", r, re.I)], refs
    assert "@import" not in css
    return doc


def section_ids(doc: _Collect) -> set[str]:
    return {a["id"] for tag, a in doc.tags if tag == "section" and "id" in a}


def figure_ids(doc: _Collect) -> set[str]:
    return {a["id"][4:] for tag, a in doc.tags if tag == "figure" and "id" in a}


# ============================================================================ runs


@pytest.fixture(autouse=True)
def _reports_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest turns the report after `train`/`evaluate` off for the other tests."""
    monkeypatch.delenv("VAEKIT_NO_REPORT", raising=False)


@pytest.fixture(scope="module")
def digits_k2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny labelled image run with a 2-D latent space, trained by the CLI, which writes
    its report."""
    from vaekit.cli import main

    run = tmp_path_factory.mktemp("report") / "digits-k2"
    args = [*DIGITS_ARGS, "--latent-dim", "2", "--epochs", "2", "--out", str(run)]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("VAEKIT_NO_REPORT", raising=False)
        assert main(["train", *args]) == 0
    return run


@pytest.fixture(scope="module")
def ring_report(ring_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared ring run with its report written by `vaekit report`."""
    from vaekit.cli import main

    run = shutil.copytree(ring_run, tmp_path_factory.mktemp("report") / "ring")
    assert main(["report", str(run), "--no-progress"]) == 0
    return run


def test_training_writes_a_self_contained_report_with_every_section(digits_k2):
    doc = assert_self_contained(digits_k2 / "report.html")
    assert section_ids(doc) >= SECTIONS
    text = " ".join(doc.text)
    command = (digits_k2 / "command.txt").read_text()
    assert f"vaekit train {' '.join(DIGITS_ARGS)} --latent-dim 2" in command  # exact command
    assert "vaekit train --data digits --limit 200" in text
    for unit in ("nats/example", "bits/dim"):
        assert unit in text
    assert any(tag == "meta" and "Content-Security-Policy" in a.get("http-equiv", "")
               for tag, a in doc.tags)


def test_ring_report_figures_are_png_and_svg_files(ring_report):
    doc = assert_self_contained(ring_report / "report.html")
    assert f"vaekit train {' '.join(RING_ARGS)}" in (ring_report / "command.txt").read_text()
    for name in ("training-curves", "density-2d", "latent-scatter", "manifold"):
        assert name in figure_ids(doc)
        assert (ring_report / "figures" / f"{name}.png").stat().st_size > 5000
        svg = (ring_report / "figures" / f"{name}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg


def test_epoch_rows_log_the_learning_rate_and_both_elbo_terms(ring_run):
    rows = [json.loads(line) for line in (ring_run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["lr"] == pytest.approx(1e-3)  # the default, constant schedule
        # ELBO = E_q[log p(x|z)] - KL on the same draws
        assert row["val_elbo"] == pytest.approx(row["val_log_px_z"] - row["val_kl"], abs=1e-6)


def needed(what: str, how: str) -> None:
    """A test that needs ``what`` fails in CI (whose set-up installs it), and elsewhere skips
    saying how to install it: never a test that silently checks nothing."""
    message = f"{what} is not installed ({how})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI's set-up must install it")
    pytest.skip(message)


def test_tensorboard_logs_every_epoch_scalar_and_the_image_grids(digits_k2):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        needed("tensorboard", "bash scripts/setup.sh, or pip install -e '.[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list((digits_k2 / "tensorboard").glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(digits_k2 / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    rows = [json.loads(line) for line in (digits_k2 / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2  # --epochs 2
    tags = set(acc.Tags()["scalars"])
    assert {"epoch/train_loss", "epoch/val_elbo", "epoch/lr", "epoch/images_per_s"} <= tags
    for key in ("train_loss", "val_elbo", "lr", "val_kl"):
        events = acc.Scalars(f"epoch/{key}")
        assert [e.step for e in events] == [r["epoch"] for r in rows]  # x = epoch
        assert [e.value for e in events] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert {"samples", "reconstructions"} <= set(acc.Tags()["images"])
    grid = acc.Images("samples")[-1]
    assert grid.step == 2 and grid.width >= 8 * 8 and grid.height >= 8 * 8  # 8 x 8 of 8x8 digits
    with Image.open(io.BytesIO(grid.encoded_image_string)) as im:
        assert np.asarray(im).std() > 0  # an image, not a blank tile


def test_image_run_report_shows_image_figures_and_the_k2_manifold(digits_k2):
    doc = assert_self_contained(digits_k2 / "report.html")
    shown = figure_ids(doc)
    assert {"samples", "reconstructions", "interpolations", "latent-scatter",
            "manifold"} <= shown
    assert "density-2d" not in shown  # images, not 2-D points
    ctx = load_context(digits_k2)
    use, skipped = applicable(ctx)
    assert {s.name for s in use} == shown
    assert set(skipped) | shown == set(FIGURES)
    assert all(why for why in skipped.values())  # every omission says why


def test_panels_traversal_rows_and_where_the_manifold_applies(digits_k2, tmp_path, cli):
    ctx = load_context(digits_k2)
    curves = FIGURES["training-curves"].draw(ctx)
    # loss/ELBO, reconstruction term, KL (Bernoulli: no gamma; constant lr: no lr panel)
    assert [ax.get_title() for ax in panels(curves)] == [
        "objective", "reconstruction term (validation)", "KL term (validation)"]
    assert len(panels(FIGURES["reconstructions"].draw(ctx))) == 2  # inputs | reconstructions
    assert len(panels(FIGURES["samples"].draw(ctx))) == 1
    from vaekit.evaluation.diagnostics import latent_diagnostics

    active = latent_diagnostics(ctx.stage1, ctx.test_batch())["active_units"]
    if active:  # one row per active dimension, labelled with its KL
        (ax,) = panels(FIGURES["traversals"].draw(ctx))
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert len(labels) == active and all("nats" in lab for lab in labels)
    # the manifold figure exists only for k = 2
    assert FIGURES["manifold"].applies(ctx) is None
    run4 = tmp_path / "digits-k4"
    assert cli("train", *DIGITS_ARGS, "--epochs", "1", "--out", run4).code == 0
    ctx4 = load_context(run4)
    assert "2" in FIGURES["manifold"].applies(ctx4)
    assert not (run4 / "figures" / "manifold.png").exists()
    assert (run4 / "figures" / "latent-scatter.png").exists()  # PCA of the 4-D codes


def test_evaluate_refreshes_the_report_with_the_estimator_comparison(ring_run, cli, tmp_path):
    run = shutil.copytree(ring_run, tmp_path / "run")
    res = cli("evaluate", run, "--k", "5", "--loglik", "20", "--naive", "50", "--diagnostics")
    assert res.code == 0, res.err
    assert f"report: {run / 'report.html'}" in res.out
    doc = assert_self_contained(run / "report.html")
    assert "estimators" in figure_ids(doc)
    text = " ".join(doc.text)
    assert "naive estimator z ~ p(z), K = 50" in text and "ESS median" in text
    ctx = load_context(run)
    assert len(panels(FIGURES["estimators"].draw(ctx))) == 3  # importance, naive vs, ESS
    assert len(panels(FIGURES["density-2d"].draw(ctx))) == 4  # data, samples, 2 densities
    assert "WARNING: section" not in text
    # trained on, the report says which figures are of the older checkpoint
    assert cli("train", "--resume", run, "--epochs", "2", "--no-progress").code == 0
    text = " ".join(parse_report(run / "report.html").text)
    assert "section marginal of this evaluation is of the checkpoint of epoch 1" in text


def test_report_command(ring_run, cli, tmp_path):
    run = shutil.copytree(ring_run, tmp_path / "run")
    res = cli("report", run, "--no-progress", "--out", tmp_path / "r.html")
    assert res.code == 0, res.err
    assert "figures: training-curves" in res.out
    assert_self_contained(tmp_path / "r.html")
    assert not (run / "report.html").exists()
    cli("report", tmp_path / "no-such-run").assert_user_error()
    cli("report", run, "--out", tmp_path / "r.txt").assert_user_error("suffix")


def test_two_stage_report_compares_both_priors(cli, tmp_path):
    run = tmp_path / "two"
    res = cli("train", *RING_ARGS, "--likelihood", "gaussian-gamma", "--epochs", "1",
              "--two-stage", "--stage2-epochs", "1", "--out", run)
    assert res.code == 0, res.err
    doc = assert_self_contained(run / "report.html")
    assert "two-stage" in section_ids(doc)
    assert "samples" in figure_ids(doc)  # 2-D data show samples only to compare the priors
    fig = FIGURES["samples"].draw(load_context(run))
    assert [ax.get_title() for ax in panels(fig)] == ["stage-1 prior z ~ N(0, I)", "stage 2"]


def test_ring_demo_learns_the_ring_and_shows_the_naive_estimator_fail(cli, tmp_path):
    out = tmp_path / "demo"
    res = cli("demo", "ring", "--out", out, "--epochs", "8", "--no-progress")
    assert res.code == 0, res.err
    assert f"report: {out / 'report.html'}" in res.out
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["val_kl"] > 1.0  # the latent carries information: no collapse
    ctx = load_context(out)
    curves = panels(FIGURES["training-curves"].draw(ctx))  # + gamma, + lr (cosine schedule)
    assert len(curves) == 5 and curves[3].get_yscale() == "log"
    on_ring, inside = ring_contrast(ctx.stage1)
    assert on_ring > inside + 2.0  # e^2 = 7 times denser on the ring than in its hole
    # and integrates to about 1 on a grid, most of it within 0.3 of radius 1.1
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-2, 2, 81)] * 2, indexing="ij"), -1)
    from vaekit.report.figures import learned_log_density

    p = learned_log_density(ctx.stage1, grid.reshape(-1, 2), 64).exp() * (4 / 80) ** 2
    radius = grid.reshape(-1, 2).norm(dim=1)
    assert 0.8 < float(p.sum()) < 1.2
    assert float(p[(radius - 1.1).abs() < 0.3].sum()) > 0.8 * float(p.sum())
    assert circle(1.0).norm(dim=1).allclose(torch.ones(256))
    m = json.loads((out / "eval-test.json").read_text())["marginal"]
    # with 10 samples the prior's guesses miss the ring; the encoder's do not
    assert m["naive"]["curve"]["10"] < m["importance"]["curve"]["10"] - 3
    doc = assert_self_contained(out / "report.html")
    assert {"density-2d", "estimators", "manifold"} <= figure_ids(doc)
    assert "vaekit demo ring" in (out / "command.txt").read_text()


# ============================================================================ a real browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-default-apps", "--enable-logging=stderr", "--v=0"]


def _find_browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A headless chromium that starts, or a skip that says why there is none."""
    found = _find_browser()
    if found is None:  # the set-up installs it (CI: .ci/run); never apt-get from a test
        needed("chromium", "bash scripts/setup.sh --with-browser, as root on Debian")
    res = run_browser(found, tmp_path_factory.mktemp("chromium-smoke"), "--dump-dom",
                      "data:text/html,<p>vaekit-smoke</p>", timeout=60, fail=False)
    if res is None or "vaekit-smoke" not in res.stdout:
        why = f"{found} does not start headless: " \
              f"{(res.stderr if res else 'timed out').strip()[-300:]}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return found


def run_browser(browser: str, profile: Path, *args: str, timeout: float = 90,
                fail: bool = True) -> subprocess.CompletedProcess | None:
    """One headless chromium run in a fresh profile; on a timeout its whole process group
    is killed (renderers included), so a hung browser cannot hang the test suite; then the
    test fails (or, with ``fail=False``, None is returned)."""
    proc = subprocess.Popen([browser, *CHROME_FLAGS, f"--user-data-dir={profile}", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if fail:
            pytest.fail(f"chromium did not finish within {timeout} s")
        return None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def console_messages(stderr: str) -> list[str]:
    """Console output of the page (a report has no scripts: any message is an error, e.g.
    a blocked external resource or a CSP violation)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


NARROW = 420  # px: a phone


def test_report_renders_in_chromium_without_errors_or_overflow(browser, digits_k2, tmp_path):
    page = tmp_path / "report.html"
    shutil.copy(digits_k2 / "report.html", page)
    shot = tmp_path / "wide.png"
    res = run_browser(browser, tmp_path / "profile1", "--hide-scrollbars",
                      "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), res.stderr[-2000:]
    assert not console_messages(res.stderr)
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1200)
    assert pixels.var() > 200  # text, tables and figures, not a blank page
    assert (pixels < 128).mean() > 0.01  # some dark ink
    # headless windows are at least 500 px wide: a narrow viewport is an iframe of 420 px;
    # a script in the (test's own) outer page reads the report's scroll width
    probe = tmp_path / "narrow.html"
    probe.write_text(
        "<!DOCTYPE html><html><body style='margin:0'>"
        f"<iframe id='f' src='report.html' style='width:{NARROW}px;height:900px;border:0'>"
        "</iframe><script>document.getElementById('f').onload = function () {"
        "  var d = this.contentDocument;"
        "  document.body.setAttribute('data-width', d ? d.documentElement.scrollWidth + ',' +"
        "    this.contentWindow.innerWidth + ',' + d.images.length : 'blocked'); };"
        "</script></body></html>")
    res = run_browser(browser, tmp_path / "profile2", "--allow-file-access-from-files",
                      "--virtual-time-budget=10000", "--window-size=800,1000", "--dump-dom",
                      probe.as_uri())
    found = re.search(r"data-width=\"(\d+),(\d+),(\d+)\"", res.stdout)
    assert found, (res.stdout[-500:], res.stderr[-2000:])
    scroll, width, images = map(int, found.groups())
    assert width == NARROW
    assert scroll <= width  # no horizontal overflow: nothing wider than a phone's screen
    assert images == len(figure_ids(parse_report(page)))
    assert not console_messages(res.stderr)
