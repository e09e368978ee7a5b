"""The figures of an evaluation (and of the last training epoch) as rows: one list that the
console text (:mod:`vaekit.report.text`) and the HTML report (:mod:`vaekit.report.html`)
both render, so that every number, unit and estimator name is written once.

A row is (quantity, estimator, value in nats/example or the row's unit, its s.e., bits/dim).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def number(value: float | None, digits: int = 3, se: float | None = None) -> str:
    """A number as shown: ``digits`` decimals (0: a count, with thousands separators;
    negative: that many significant digits), ± s.e. where given; – for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if digits < 0:
        text = f"{value:.{-digits}g}"
    elif digits == 0:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.4g}"
    if se is not None:
        text += f" ± {se:.{max(digits, 0)}f}" if math.isfinite(se) else " (s.e. n/a)"
    return text


@dataclass(frozen=True)
class Row:
    quantity: str
    estimator: str
    value: float | None
    se: float | None = None
    bpd: float | None = None
    unit: str = "nats/example"
    digits: int = 3

    def shown(self) -> str:
        """The value ± s.e. as the report and the console show it."""
        return number(self.value, self.digits, self.se)


def _estimator(e: dict[str, Any], how: str) -> Row:
    se = e.get("log_px_se_total", e["log_px_se"])
    return Row("log p(x)", f"{how}, K = {e['k']}; ESS median {e['ess_median']:.1f}, 5th "
               f"percentile {e['ess_p5']:.1f}", e["log_px"], se, e.get("bpd"))


def evaluation_rows(r: dict[str, Any]) -> list[Row]:
    """Every figure of one ``eval-SPLIT.json`` that has nats: the standard ones, both
    estimators of log p(x) and the ELBO gap, the KDE, the parametric baselines."""
    kl = r.get("kl_estimator", "analytic")
    rows = [Row("ELBO", f"one sample per example, {kl} KL", r["elbo"], r["elbo_se"],
                r.get("elbo_bpd")),
            Row("E_q[log p(x|z)]", "one sample per example", r["log_px_z"], r["log_px_z_se"]),
            Row("KL(q(z|x) ‖ p(z))", kl, r["kl"], r["kl_se"])]
    if "iwae" in r:
        rows.append(Row(f"IWAE-{r['iwae_k']} bound on log p(x)", f"importance sampling, "
                        f"{r['iwae_k']} samples z ~ q(z|x)", r["iwae"], r["iwae_se"],
                        r.get("iwae_bpd")))
    m = r.get("marginal")
    if m:
        rows.append(_estimator(m["importance"], "importance sampling z ~ q(z|x)"))
        if "naive" in m:
            rows.append(_estimator(m["naive"], "naive estimator z ~ p(z)"))
        gap = m["elbo_gap"]
        rows.append(Row("log p̂(x) − ELBO ≈ KL(q(z|x) ‖ p(z|x))", "importance estimate minus "
                        "the ELBO's own draw", gap["mean"], gap["se"]))
    if "kde" in r:
        k = r["kde"]
        rows.append(Row(f"{k['kernel']}-kernel KDE of the training data", f"{k['n_train']} "
                        f"centres, bandwidth {k['bandwidth']:.4g} chosen on validation data",
                        k["log_lik"], k["log_lik_se"], k.get("bpd")))
    for row in (r.get("baselines") or {}).get("rows", []):
        rows.append(Row(row["model"], f"exact, {row['parameters']} parameters", row["log_px"],
                        row["log_px_se"], row.get("bpd")))
    return rows


def variance_split_note(diag: dict[str, Any]) -> str:
    """Whether the sorted mean posterior variances split in two (the ``variance_gap`` of
    :func:`vaekit.evaluation.diagnostics.latent_diagnostics`), with gamma; "" for a
    diagnostics section written before it existed."""
    g = diag.get("variance_gap")
    if not g:
        return ""
    gamma = "" if diag.get("gamma") is None else f"; gamma {diag['gamma']:.4g}"
    if g["ratio"] is None:
        return f"no clear split (one latent dimension){gamma}"
    gap = (f"largest gap of the sorted posterior variances x{g['ratio']:.3g} after the "
           f"{g['below']} smallest ({g['lower']:.3g} -> {g['upper']:.3g})")
    dims = f"{g['below']} dimension{'s' if g['below'] > 1 else ''}"
    verdict = (f"split: {dims} below it" if g["split"] else
               f"no clear split (a split needs x{g['threshold']:g}): the count is no estimate")
    return f"{gap}; {verdict}{gamma}"


def evaluation_notes(r: dict[str, Any]) -> list[str]:
    """The facts beside the rows: active units, used dimensions, learned variances."""
    notes = [f"active latent units (Cov_x E_q[z_u|x] > 0.01): {r['active_units']} of "
             f"{r['latent_dim']}"]
    diag = r.get("diagnostics")
    if diag:
        split = variance_split_note(diag)
        notes.append(f"used dimensions (mean posterior variance < {diag['used_threshold']}; "
                     f"Dai & Wipf's intrinsic dimension): {diag['used_dims']}"
                     + (f" ({split})" if split else ""))
    notes += [f"learned {k[len('likelihood_'):]}: {v:.6g}" for k, v in r.items()
              if k.startswith("likelihood_")]
    return notes


def evaluation_warnings(r: dict[str, Any]) -> list[str]:
    """Estimates that have not converged, posterior collapse."""
    out = []
    for key in ("importance", "naive"):
        w = (r.get("marginal") or {}).get(key, {}).get("warning")
        if w:
            out.append(f"{key} estimator: {w}")
    w = (r.get("diagnostics") or {}).get("warning")
    if w:
        out.append(w)
    return out


def training_rows(last: dict[str, Any], history: list[dict[str, Any]], epochs: int,
                  objective: str, kl: str) -> list[Row]:
    """The last epoch's figures from ``metrics.jsonl``."""
    one = f"one sample per example, {kl} KL, fixed noise"
    rows = [Row("epochs trained", f"{last.get('step', '?')} optimizer steps", last["epoch"],
                unit=f"of {epochs}", digits=0),
            Row("training loss", f"{objective}, mean over the epoch's mini-batches",
                last.get("train_loss")),
            Row("validation ELBO", one, last.get("val_elbo"))]
    if last.get("val_bpd") is not None:
        rows.append(Row("validation −ELBO", one, last["val_bpd"], unit="bits/dim", digits=4))
    if "val_log_px_z" in last:
        rows.append(Row("validation E_q[log p(x|z)]", "one sample per example",
                        last["val_log_px_z"]))
    if "val_kl" in last:
        rows.append(Row("validation KL(q(z|x) ‖ p(z))", kl, last["val_kl"]))
    for key, what in (("gamma", "learned decoder variance γ"),
                      ("mean_variance", "learned decoder variance, mean over dimensions")):
        if key in last:
            rows.append(Row(what, "", last[key], unit="(data units)²", digits=-4))
    if "lr" in last:
        rows.append(Row("learning rate", "at the epoch's last step", last["lr"], unit="per step",
                        digits=-3))
    rows.append(Row("throughput", "last epoch", last.get("images_per_s", 0), unit="examples/s",
                    digits=0))
    seconds = sum(row.get("seconds", 0.0) for row in history)
    rows.append(Row("training time", "sum over epochs (without set-up and validation)",
                    seconds, unit="s", digits=1))
    return rows
