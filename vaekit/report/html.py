"""The report as one self-contained HTML file: inline CSS, figures as base64 PNG data URIs,
no scripts, fonts, styles or images from anywhere else (a Content-Security-Policy that
allows only inline styles and data: images says so to the browser), readable offline on a
phone and printable.

The page is the Jinja2 template ``templates/report.html`` with autoescaping on: every
value this module hands it is escaped there, so no call site has to remember to. This
module only gathers the values: tables as rows of strings (the evaluation's from
:mod:`vaekit.report.rows`, which the console text renders too).
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import jinja2

from vaekit import __version__
from vaekit.errors import CheckpointError
from vaekit.io import LOG_LIMIT, read_bytes
from vaekit.report.context import ReportContext
from vaekit.report.rows import (
    evaluation_notes,
    evaluation_rows,
    evaluation_warnings,
    number,
    training_rows,
)
from vaekit.rundir import COMMAND_FILE

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1b1f24; background: #fff; margin: 0 auto; padding: 1rem; max-width: 1100px; }
h1 { font-size: 1.5rem; margin: 0.2rem 0 0.3rem; overflow-wrap: anywhere; }
h2 { font-size: 1.2rem; margin: 2rem 0 0.6rem; border-bottom: 1px solid #d0d7de;
     padding-bottom: 0.2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 0.4rem; }
p, li { overflow-wrap: anywhere; }
.meta { color: #57606a; font-size: 0.9rem; }
nav ul { list-style: none; padding: 0; margin: 0.6rem 0; display: flex; flex-wrap: wrap;
         gap: 0.3rem 1rem; }
nav a { color: #0969da; text-decoration: none; }
pre, code { font: 0.85rem/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 4px; padding: 0.6rem;
      white-space: pre-wrap; overflow-wrap: anywhere; margin: 0.4rem 0; }
.table { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.4rem 0; font-size: 0.88rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.5rem; text-align: left;
         vertical-align: top; overflow-wrap: break-word; }
th { background: #f6f8fa; overflow-wrap: normal; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0 1.6rem; break-inside: avoid; page-break-inside: avoid; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { font-size: 0.88rem; color: #424a53; margin-top: 0.3rem; }
.warn { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 4px;
        padding: 0.4rem 0.6rem; margin: 0.4rem 0; overflow-wrap: anywhere; }
.files { font-size: 0.85rem; color: #57606a; }
@media (max-width: 600px) { body { font-size: 14px; padding: 0.6rem; }
  th, td { padding: 0.2rem 0.3rem; } }
@media print { body { max-width: none; padding: 0; font-size: 11pt; } nav { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; } a { color: inherit; }
  .table { overflow: visible; } }
"""


@dataclass
class Rendered:
    """One figure of the report: its registry entry's name, title and caption, PNG bytes,
    and where its PNG and SVG files went."""

    name: str
    title: str
    caption: str
    png: bytes
    files: list[str]


_ENV = jinja2.Environment(loader=jinja2.PackageLoader("vaekit.report", "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined,
                          trim_blocks=False, lstrip_blocks=False)


def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in d.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", json.dumps(value)))
    return out


def setup_lines(ctx: ReportContext) -> list[str]:
    """The set-up lines of train.log (model, training, warnings) of the first start."""
    path = ctx.run_dir / "train.log"
    lines = read_bytes(path, LOG_LIMIT, "the training log", error=CheckpointError).decode(
        "utf-8", "replace").splitlines() if os.path.lexists(path) else []
    keep = ("model:", "training:", "WARNING")
    return list(dict.fromkeys(line for line in lines if line.startswith(keep)))


def config_rows(ctx: ReportContext) -> list[tuple[str, str]]:
    """config.json: one row per section, its settings as dotted ``key = value`` pairs."""
    rows = []
    for section, value in ctx.cfg.to_dict().items():
        if value is None:  # e.g. no stage2 section: a one-stage run
            continue
        pairs = _flat(value) if isinstance(value, dict) else [("", json.dumps(value))]
        rows.append((section, ", ".join(f"{k} = {v}" if k else v for k, v in pairs)))
    return rows


def data_rows(ctx: ReportContext) -> list[tuple[str, str]]:
    d = ctx.data
    return [("dataset", f"{d.dataset.name} ({d.dataset.source})"),
            ("examples", f"{len(d.train_raw)} training, {len(d.val)} validation, "
                         f"{len(d.test)} test"),
            ("shape of one example", str(d.shape)),
            ("values", f"{d.levels} levels" if d.levels else "continuous"),
            ("labels", f"0–{d.num_classes - 1}" if d.num_classes else
             (d.dataset.label_note or "none")),
            ("transform", d.transform),
            ("protocol", d.protocol)]


def training_table(ctx: ReportContext) -> list[tuple[str, str, str, str]]:
    if not ctx.history:
        return []
    kl = "analytic" if ctx.stage1.prior.has_analytic_kl else "one-sample Monte Carlo"
    t = ctx.cfg.train
    return [(r.quantity, r.estimator, r.shown(), r.unit) for r in
            training_rows(ctx.history[-1], ctx.history, t.epochs, t.objective.label(), kl)]


def evaluation_view(ctx: ReportContext, split: str, r: dict[str, Any]) -> dict[str, Any]:
    """One ``eval-SPLIT.json`` as the template shows it."""
    ck = r.get("checkpoint") or {}
    return {"split": split, "n_examples": r["n_examples"], "seconds": r.get("seconds", "?"),
            "where": f", checkpoint of epoch {ck['epoch']}, step {ck['step']}" if ck else "",
            "rows": [(x.quantity, x.estimator, x.shown(), number(x.bpd, 4))
                     for x in evaluation_rows(r)],
            "notes": evaluation_notes(r),
            "warnings": ctx.stale(r) + evaluation_warnings(r)}


def _shown(view: Any, ctx: ReportContext, split: str, r: dict[str, Any]) -> dict[str, Any]:
    """The evaluation's view, or, for a file edited past what it can show, a warning."""
    try:
        return view(ctx, split, r)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        return {"split": split, "n_examples": r.get("n_examples", "?"), "seconds": "?",
                "where": "", "rows": [], "notes": [], "warnings": [
                    f"eval-{split}.json cannot be shown ({type(err).__name__}: {err}): it was "
                    f"edited by hand or by another program; run `vaekit evaluate {ctx.run_dir}` "
                    "again"]}


def two_stage_view(ctx: ReportContext) -> dict[str, Any]:
    """Both stages side by side: their last epochs, stage 2's evaluation, generation scores."""
    s1, s2 = (ctx.history or [{}])[-1], (ctx.stage2_history or [{}])[-1]
    view: dict[str, Any] = {"rows": [
        ("validation ELBO", "stage 1: of the data; stage 2: of the stage-1 codes",
         number(s1.get("val_elbo")), number(s2.get("val_elbo")), "nats/example"),
        ("learned variance", "stage 1: γ of p(x|z); stage 2: γ_z of p(z|u)",
         number(s1.get("gamma"), 5), number(s2.get("gamma"), 5), "(units)²"),
        ("epochs", "", str(s1.get("epoch", "–")), str(s2.get("epoch", "–")), "")],
        "evaluation": "", "generation": [], "generation_note": ""}
    r = ctx.evaluation or {}
    if t := r.get("two_stage"):
        view["evaluation"] = (f"Evaluation ({r['split']} split): stage-2 ELBO of one code "
                              f"z ~ q1(z|x) per example "
                              f"{number(t['stage2_elbo'], 3, t['stage2_elbo_se'])} "
                              f"nats/example over {t['latent_dim']} dimensions.")
    g = r.get("generation")
    if g and "two_stage" in g:
        view["generation"] = [(name, number(g[key]["frechet"]), number(g[key]["precision"]),
                               number(g[key]["recall"])) for key, name in (
            ("stage1_prior", "stage-1 prior z ~ N(0, I)"),
            ("two_stage", "two-stage (z from stage 2)"))]
        view["generation_note"] = (f"Generation quality of {g['n']} samples against {g['n']} "
                                   f"test examples (features: {g['features']}; lower Fréchet "
                                   "distance is better):")
    return view


def build_html(ctx: ReportContext, rendered: list[Rendered], skipped: dict[str, str],
               seconds: float) -> str:
    """The whole report as one string."""
    nav = [("command", "Command"), ("configuration", "Configuration"), ("data", "Data"),
           ("metrics", "Metrics"), ("figures", "Figures")]
    nav += [("two-stage", "Two-stage")] if ctx.two_stage else []
    figures = [{"name": f.name, "title": f.title, "caption": f.caption, "files": f.files,
                "png_base64": base64.b64encode(f.png).decode("ascii")} for f in rendered]
    return _ENV.get_template("report.html").render(
        csp=CSP, css=CSS, name=ctx.run_dir.resolve().name, nav=nav,
        kind="two-stage VAE" if ctx.two_stage else ctx.cfg.model.kind.label(),
        dataset=ctx.data.dataset.name, latent_dim=ctx.latent_dim,
        likelihood=ctx.cfg.model.likelihood.label(), run_dir=str(ctx.run_dir),
        stamp=time.strftime("%Y-%m-%d %H:%M:%S"), version=__version__, seconds=seconds,
        command=(ctx.command or "").strip(), command_file=COMMAND_FILE,
        setup=setup_lines(ctx), config_rows=config_rows(ctx), data_rows=data_rows(ctx),
        training_rows=training_table(ctx), figures=figures, skipped=skipped,
        evaluations=[_shown(evaluation_view, ctx, split, r) for split, r in ctx.evals.items()],
        two_stage=two_stage_view(ctx) if ctx.two_stage else None) + "\n"
