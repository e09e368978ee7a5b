"""The report as one self-contained HTML file: inline CSS, figures as base64 PNG data URIs,
no scripts, fonts, styles or images from anywhere else (a Content-Security-Policy that
allows only inline styles and data: images says so to the browser), readable offline on a
phone and printable."""

from __future__ import annotations

import base64
import html
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vaekit import __version__
from vaekit.report.context import COMMAND_FILE, ReportContext

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


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: float | None, digits: int = 3, se: float | None = None) -> str:
    """A number for a table cell: fixed digits, with ± s.e. where given; – for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    text = f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.4g}"
    if se is not None:
        text += f" ± {se:.{digits}f}" if math.isfinite(se) else " (s.e. n/a)"
    return text


def table(head: Iterable[str], rows: Iterable[Iterable[Any]], numeric: Iterable[int] = (),
          header_column: bool = False) -> str:
    """An HTML table (cells escaped; the columns in ``numeric`` right-aligned; the first
    column as row headers with ``header_column``), wrapped so that a wide table scrolls
    inside the page instead of widening it."""
    right = set(numeric)
    head = list(head)
    out = ["<div class='table'><table>"]
    if head:
        out += ["<thead><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr></thead>"]
    out.append("<tbody>")
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            tag = "th" if header_column and i == 0 else "td"
            cls = " class='num'" if i in right else ""
            cells.append(f"<{tag}{cls}>{esc(c)}</{tag}>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _section(anchor: str, title: str, body: str) -> str:
    return f"<section id='{anchor}'><h2>{esc(title)}</h2>{body}</section>"


# ============================================================================ sections


def command_section(ctx: ReportContext) -> str:
    if ctx.command:
        body = f"<pre>{esc(ctx.command.strip())}</pre>"
    else:
        body = (f"<p>Not recorded: this run has no {COMMAND_FILE} (it was trained through the "
                "Python API, or by a vaekit that did not record commands).</p>")
    return _section("command", "Command", body + f"<p class='meta'>Refresh this report with "
                    f"<code>vaekit report {esc(ctx.run_dir)}</code>.</p>")


def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in d.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", json.dumps(value)))
    return out


def _log_setup(ctx: ReportContext) -> list[str]:
    """The set-up lines of train.log (data, model, training, warnings) of the first start."""
    path = ctx.run_dir / "train.log"
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    keep = ("data:", "model:", "training:", "WARNING")
    return list(dict.fromkeys(line for line in lines if line.startswith(keep)))


def config_section(ctx: ReportContext) -> str:
    """The set-up lines of train.log, then config.json: one row per section, its settings
    as dotted ``key = value`` pairs (compact on screen and on paper)."""
    setup = _log_setup(ctx)
    body = "".join(f"<p>{esc(line)}</p>" for line in setup if not line.startswith("data:"))
    rows = []
    for section, value in ctx.cfg.to_dict().items():
        if value is None:  # e.g. no stage2 section: a one-stage run
            continue
        pairs = _flat(value) if isinstance(value, dict) else [("", json.dumps(value))]
        rows.append((section, ", ".join(f"{k} = {v}" if k else v for k, v in pairs)))
    body += "<h3>config.json</h3>" + table(("section", "settings"), rows)
    return _section("configuration", "Configuration", body)


def data_section(ctx: ReportContext) -> str:
    d = ctx.data
    rows = [("dataset", f"{d.dataset.name} ({d.dataset.source})"),
            ("examples", f"{len(d.train_raw)} training, {len(d.val)} validation, "
                         f"{len(d.test)} test"),
            ("shape of one example", str(d.shape)),
            ("values", f"{d.levels} levels" if d.levels else "continuous"),
            ("labels", f"0–{d.num_classes - 1}" if d.num_classes else
             (d.dataset.label_note or "none")),
            ("transform", d.transform),
            ("protocol", d.protocol)]
    return _section("data", "Data protocol", table((), rows, header_column=True))


def training_rows(ctx: ReportContext) -> list[tuple[str, str, str, str]]:
    """The last epoch's figures from metrics.jsonl: (quantity, estimator, value, unit)."""
    if not ctx.history:
        return []
    r, t = ctx.history[-1], ctx.cfg.train
    kl = "analytic" if ctx.stage1.prior.has_analytic_kl else "one-sample Monte Carlo"
    one = f"one sample per example, {kl} KL, fixed noise"
    rows = [("epochs trained", f"{r.get('step', '?')} optimizer steps", f"{r['epoch']}",
             f"of {t.epochs}"),
            ("training loss", f"{t.objective.label()}, mean over the epoch's mini-batches",
             num(r.get("train_loss")), "nats/example"),
            ("validation ELBO", one, num(r.get("val_elbo")), "nats/example")]
    if r.get("val_bpd") is not None:
        rows.append(("validation −ELBO", one, num(r["val_bpd"], 4), "bits/dim"))
    if "val_log_px_z" in r:
        rows.append(("validation E_q[log p(x|z)]", "one sample per example",
                     num(r["val_log_px_z"]), "nats/example"))
    if "val_kl" in r:
        rows.append(("validation KL(q(z|x) ‖ p(z))", kl, num(r["val_kl"]), "nats/example"))
    for key, what in (("gamma", "learned decoder variance γ"),
                      ("mean_variance", "learned decoder variance, mean over dimensions")):
        if key in r:
            rows.append((what, "", f"{r[key]:.4g}", "(data units)²"))
    if "lr" in r:
        rows.append(("learning rate", "at the epoch's last step", f"{r['lr']:.3g}", "per step"))
    rows.append(("throughput", "last epoch", f"{r.get('images_per_s', 0):,.0f}", "examples/s"))
    seconds = sum(row.get("seconds", 0.0) for row in ctx.history)
    rows.append(("training time", "sum over epochs (without set-up and validation)",
                 f"{seconds:.1f}", "s"))
    return rows


def _estimator_row(name: str, e: dict[str, Any], how: str) -> tuple[str, str, str, str]:
    se = e.get("log_px_se_total", e["log_px_se"])
    return (name, f"{how}, K = {e['k']}; ESS median {e['ess_median']:.1f}, 5th percentile "
                  f"{e['ess_p5']:.1f}", num(e["log_px"], 3, se),
            num(e.get("bpd"), 4))


def evaluation_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(quantity, estimator, nats/example ± s.e., bits/dim) of one eval-SPLIT.json."""
    kl = r.get("kl_estimator", "analytic")
    rows = [("ELBO", f"one sample per example, {kl} KL", num(r["elbo"], 3, r["elbo_se"]),
             num(r.get("elbo_bpd"), 4)),
            ("E_q[log p(x|z)]", "one sample per example", num(r["log_px_z"], 3, r["log_px_z_se"]),
             "–"),
            ("KL(q(z|x) ‖ p(z))", kl, num(r["kl"], 3, r["kl_se"]), "–")]
    if "iwae" in r:
        rows.append((f"IWAE-{r['iwae_k']} bound on log p(x)",
                     f"importance sampling, {r['iwae_k']} samples z ~ q(z|x)",
                     num(r["iwae"], 3, r["iwae_se"]), num(r.get("iwae_bpd"), 4)))
    m = r.get("marginal")
    if m:
        rows.append(_estimator_row("log p(x)", m["importance"], "importance sampling z ~ q(z|x)"))
        if "naive" in m:
            rows.append(_estimator_row("log p(x)", m["naive"], "naive estimator z ~ p(z)"))
        gap = m["elbo_gap"]
        rows.append(("log p̂(x) − ELBO ≈ KL(q(z|x) ‖ p(z|x))", "importance estimate minus the "
                     "ELBO's own draw", num(gap["mean"], 3, gap["se"]), "–"))
    if "kde" in r:
        k = r["kde"]
        rows.append((f"{k['kernel']}-kernel KDE of the training data",
                     f"{k['n_train']} centres, bandwidth {k['bandwidth']:.4g} chosen on "
                     "validation data", num(k["log_lik"], 3, k["log_lik_se"]),
                     num(k.get("bpd"), 4)))
    for row in (r.get("baselines") or {}).get("rows", []):
        rows.append((row["model"], f"exact, {row['parameters']} parameters",
                     num(row["log_px"], 3, row["log_px_se"]),
                     num(row.get("bpd"), 4)))
    return rows


def _warnings(r: dict[str, Any]) -> list[str]:
    out = []
    for key in ("importance", "naive"):
        w = (r.get("marginal") or {}).get(key, {}).get("warning")
        if w:
            out.append(f"{key} estimator: {w}")
    w = (r.get("diagnostics") or {}).get("warning")
    if w:
        out.append(w)
    return out


def metrics_section(ctx: ReportContext) -> str:
    body = "<h3>Training (last epoch, metrics.jsonl)</h3>"
    rows = training_rows(ctx)
    body += table(("quantity", "estimator", "value", "unit"), rows, (2,)) if rows else \
        "<p>No epoch has finished.</p>"
    for split, r in ctx.evals.items():
        ck = r.get("checkpoint") or {}
        where = f", checkpoint of epoch {ck['epoch']}, step {ck['step']}" if ck else ""
        body += (f"<h3>Evaluation on the {esc(split)} split (eval-{esc(split)}.json)</h3>"
                 f"<p class='meta'>{r['n_examples']} examples{esc(where)}; evaluation took "
                 f"{r.get('seconds', '?')} s.</p>")
        body += table(("quantity", "estimator", "nats/example ± s.e.", "bits/dim"),
                      evaluation_rows(r), (2, 3))
        extra = [f"active latent units (Cov_x E_q[z_u|x] > 0.01): {r['active_units']} of "
                 f"{r['latent_dim']}"]
        diag = r.get("diagnostics")
        if diag:
            extra.append(f"used dimensions (mean posterior variance < "
                         f"{diag['used_threshold']}; Dai & Wipf's intrinsic dimension): "
                         f"{diag['used_dims']}")
        extra += [f"learned {k[len('likelihood_'):]}: {v:.4g}" for k, v in r.items()
                  if k.startswith("likelihood_")]
        body += "<ul>" + "".join(f"<li>{esc(e)}</li>" for e in extra) + "</ul>"
        body += "".join(f"<p class='warn'>WARNING: {esc(w)}</p>"
                        for w in ctx.stale(r) + _warnings(r))
    if not ctx.evals:
        body += (f"<p>No evaluation yet: <code>vaekit evaluate {esc(ctx.run_dir)} --loglik 1000 "
                 "--naive 10000 --diagnostics</code> adds the estimators and refreshes this "
                 "report.</p>")
    return _section("metrics", "Final metrics", body)


def figures_section(rendered: list[Rendered], skipped: dict[str, str]) -> str:
    body = ""
    for f in rendered:
        data = base64.b64encode(f.png).decode("ascii")
        body += (f"<figure id='fig-{esc(f.name)}'><h3>{esc(f.title)}</h3>"
                 f"<img src='data:image/png;base64,{data}' alt='{esc(f.title)}'>"
                 f"<figcaption>{esc(f.caption)} <span class='files'>Files: "
                 f"{esc(', '.join(f.files))}.</span></figcaption></figure>")
    if skipped:
        body += "<h3>Not shown</h3><ul>" + "".join(
            f"<li>{esc(name)}: {esc(why)}</li>" for name, why in skipped.items()) + "</ul>"
    return _section("figures", "Figures", body)


def two_stage_section(ctx: ReportContext) -> str:
    """Both stages side by side: their last epochs, stage 2's evaluation, generation scores."""
    s1, s2 = (ctx.history or [{}])[-1], (ctx.stage2_history or [{}])[-1]
    rows = [("validation ELBO", "stage 1: of the data; stage 2: of the stage-1 codes",
             num(s1.get("val_elbo")), num(s2.get("val_elbo")), "nats/example"),
            ("learned variance", "stage 1: γ of p(x|z); stage 2: γ_z of p(z|u)",
             num(s1.get("gamma"), 5), num(s2.get("gamma"), 5), "(units)²"),
            ("epochs", "", str(s1.get("epoch", "–")), str(s2.get("epoch", "–")), "")]
    body = table(("quantity", "", "stage 1", "stage 2", "unit"), rows, (2, 3))
    r = ctx.evaluation or {}
    t = r.get("two_stage")
    if t:
        body += (f"<p>Evaluation ({esc(r['split'])} split): stage-2 ELBO of one code "
                 f"z ~ q1(z|x) per example {num(t['stage2_elbo'], 3, t['stage2_elbo_se'])} "
                 f"nats/example over {t['latent_dim']} dimensions.</p>")
    g = r.get("generation")
    if g and "two_stage" in g:
        rows = [(name, num(g[key]["frechet"]), num(g[key]["precision"]), num(g[key]["recall"]))
                for key, name in (("stage1_prior", "stage-1 prior z ~ N(0, I)"),
                                  ("two_stage", "two-stage (z from stage 2)"))]
        body += (f"<p>Generation quality of {g['n']} samples against {g['n']} test examples "
                 f"(features: {esc(g['features'])}; lower Fréchet distance is better):</p>")
        body += table(("sampler", "Fréchet distance", "precision", "recall"), rows, (1, 2, 3))
    else:
        body += (f"<p>Generation scores: <code>vaekit evaluate {esc(ctx.run_dir)} --generation "
                 "10000</code> compares both samplers.</p>")
    body += "<p>Samples of both priors side by side: see the samples figure.</p>"
    return _section("two-stage", "Two-stage comparison", body)


def build_html(ctx: ReportContext, rendered: list[Rendered], skipped: dict[str, str],
               seconds: float) -> str:
    """The whole report as one string."""
    name = ctx.run_dir.resolve().name
    parts = [command_section(ctx), config_section(ctx), data_section(ctx),
             metrics_section(ctx), figures_section(rendered, skipped)]
    nav = [("command", "Command"), ("configuration", "Configuration"), ("data", "Data"),
           ("metrics", "Metrics"), ("figures", "Figures")]
    if ctx.two_stage:
        parts.append(two_stage_section(ctx))
        nav.append(("two-stage", "Two-stage"))
    links = "".join(f"<li><a href='#{a}'>{esc(t)}</a></li>" for a, t in nav)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    kind = "two-stage VAE" if ctx.two_stage else ctx.cfg.model.kind.label()
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>vaekit report: {esc(name)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>vaekit report: {esc(name)}</h1><p class='meta'>{esc(kind)} on "
        f"{esc(ctx.data.dataset.name)}, latent {ctx.latent_dim}, likelihood "
        f"{esc(ctx.cfg.model.likelihood.label())}; run directory {esc(ctx.run_dir)}; "
        f"written {stamp} by vaekit {__version__} in {seconds:.1f} s; {len(rendered)} "
        f"figures.</p></header><nav><ul>{links}</ul></nav><main>{''.join(parts)}</main>"
        "</body></html>\n")
