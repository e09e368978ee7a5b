"""Human-readable report of evaluation figures: every number names unit and estimator."""

from __future__ import annotations

from typing import Any

from vaekit.report.rows import Row, evaluation_notes, evaluation_rows, variance_split_note

GROUP_ORDER = ("encoder", "decoder")  # parameter groups of the gradient table


def _row(r: Row) -> str:
    """One row on the console: quantity, value ± s.e. with its unit, bits/dim, estimator."""
    bits = f", {r.bpd:.4f} bits/dim" if r.bpd is not None else ""
    return f"  {r.quantity:<34s} {r.shown():>20s} {r.unit}{bits}  [{r.estimator}]"


def format_report(r: dict[str, Any]) -> str:
    """The figures of one evaluation (``vaekit.evaluation.suite.evaluate_all``), one row
    each (the rows of the HTML report), then the facts beside them."""
    first = " (its first ones: --limit)" if r.get("options", {}).get("limit") else ""
    lines = [f"{r.get('dataset', '?')} {r.get('split', '')} set, {r['n_examples']} examples"
             f"{first}, {r.get('likelihood', '?')} likelihood",
             f"  protocol: {r.get('protocol', 'n/a')}"]
    lines += [_row(row) for row in evaluation_rows(r)]
    lines += [f"  {note}" for note in evaluation_notes(r)]
    return "\n".join(lines)


def format_marginal(m: dict[str, Any]) -> str:
    """What the rows of the marginal-likelihood section do not show: the Monte-Carlo part
    of each estimator's s.e., convergence warnings, the IWAE-k curve."""
    lines = ["marginal likelihood log p(x) (rows above: importance sampling z ~ q(z|x)"
             + (", naive estimator z ~ p(z)" if "naive" in m else "") + "):"]
    for key in ("importance", "naive"):
        e = m.get(key)
        if e and "log_px_se_mc" in e:
            lines.append(f"  {key}: s.e. = examples {e['log_px_se']:.3f} (+) shared-sample "
                         f"Monte Carlo {e['log_px_se_mc']:.3f} (jackknife over sample groups)")
        if e and e.get("warning"):
            lines.append(f"  WARNING ({key} estimator): {e['warning']}")
    curve = ", ".join(f"k={k}: {v:.3f}" for k, v in m["iwae_curve"].items())
    lines.append(f"  IWAE-k bound (nats/example): {curve}")
    return "\n".join(lines)


def format_diagnostics(d: dict[str, Any]) -> str:
    kl = d["kl_per_dim"]
    lines = [f"latent diagnostics: {d['active_units']} of {d['latent_dim']} units active "
             f"(Cov_x E_q[z_j] > {d['active_threshold']}); {d['used_dims']} used (mean posterior "
             f"variance < {d['used_threshold']}: the intrinsic dimension, Dai & Wipf)"]
    split = variance_split_note(d)
    if split:
        lines.append(f"  {split}")
    if kl is None:
        lines.append("  KL per dimension: not defined (the prior does not factorize)")
    else:
        order = sorted(range(len(kl)), key=lambda j: -kl[j])
        top = ", ".join(f"z{j}: {kl[j]:.2f}" for j in order[:8])
        lines.append(f"  KL per dimension (nats, largest first): {top}"
                     + (" ..." if len(kl) > 8 else ""))
    if d["inactive_dims"]:
        lines.append(f"  inactive dimensions: {d['inactive_dims']}")
    if d["warning"]:
        lines.append(f"  WARNING: {d['warning']}")
    return "\n".join(lines)


def format_two_stage(t: dict[str, Any]) -> str:
    gamma1, gamma2 = t["stage1"].get("gamma"), t["stage2"].get("gamma")
    lines = ["two-stage VAE (stage 2 = the prior; the figures above are stage 1's, with "
             "N(0, I)):",
             f"  stage-2 ELBO of the codes z ~ q1(z|x): {t['stage2_elbo']:.3f} nats/example "
             f"(± {t['stage2_elbo_se']:.3f} s.e.), {t['latent_dim']} dimensions"]
    if gamma1 is not None and gamma2 is not None:
        lines.append(f"  learned variances: stage 1 gamma {gamma1:.4g}, stage 2 gamma_z "
                     f"{gamma2:.4g}")
    return "\n".join(lines)


def format_generation(g: dict[str, Any]) -> str:
    acc = g.get("test_accuracy")
    head = (f"generation quality: {g['n']} samples (means of p(x|z)) vs {g['n']} test "
            f"examples, features: {g['features']}"
            + (f" (test accuracy {acc:.3f})" if acc is not None else ""))
    lines = [head]
    for name, sc in g.items():
        if isinstance(sc, dict) and "frechet" in sc:
            lines.append(f"  {name:<14s} Fréchet distance {sc['frechet']:10.3f}   precision "
                         f"{sc['precision']:.3f}   recall {sc['recall']:.3f} (k = {sc['k']})")
    return "\n".join(lines)


def _table_row(label: str, params: Any, nats: float | None, se: float | None,
               bpd: float | None) -> str:
    value = "–" if nats is None else f"{nats:10.3f}" + ("" if se is None else f" ± {se:.3f}")
    bits = "–" if bpd is None else f"{bpd:.4f}"
    return f"  {label:<44s} {params!s:>8s}  {value:>22s}  {bits:>8s}"


def format_baselines(r: dict[str, Any]) -> str:
    """Parametric baselines beside the VAE's and the KDE's figures present in ``r``, in
    nats/example and bits/dim (nats of the baselines' data protocol; see the header)."""
    b = r["baselines"]
    lines = [f"parametric baselines on {b['transform']} data: {b['note']}",
             f"  {'model':<44s} {'params':>8s}  {'log p(x), nats/example':>22s}  {'bits/dim':>8s}"]
    for row in b["rows"]:
        lines.append(_table_row(row["model"], row["parameters"], row["log_px"],
                                row["log_px_se"], row["bpd"]))
    for name, why in b.get("skipped", {}).items():
        lines.append(f"  {name}: skipped ({why})")
    if "kde" in r:
        k = r["kde"]
        lines.append(_table_row(f"{k['kernel']}-kernel KDE ({k['n_train']} centres)", "–",
                                k["log_lik"], k["log_lik_se"], k["bpd"]))
    lines.append(_table_row("VAE ELBO (1 sample)", "–", r["elbo"], r["elbo_se"],
                            r.get("elbo_bpd")))
    if "iwae" in r:
        lines.append(_table_row(f"VAE IWAE-{r['iwae_k']} bound", "–", r["iwae"], r["iwae_se"],
                                r.get("iwae_bpd")))
    if "marginal" in r:
        imp = r["marginal"]["importance"]
        lines.append(_table_row(f"VAE log p(x), importance sampling K={imp['k']}", "–",
                                imp["log_px"], imp["log_px_se"], imp.get("bpd")))
    if b["transform"] != r.get("transform"):
        lines.append(f"  (the VAE's nats are of its own {r.get('transform')} data; compare "
                     "bits/dim)")
    return "\n".join(lines)


def _gradient_cells(r: dict[str, Any]) -> str:
    return (f" | {r['variance']:16.4g} {r['snr']:6.2f} {r['cosine']:6.3f} "
            f"{r['norm_ratio']:6.2f}")


def format_gradients(g: dict[str, Any]) -> str:
    """The gradient-estimator table: per estimator and S, for the encoder and the decoder,
    tr Cov, SNR = ||E g|| / sqrt(tr Cov), the mean cosine to the reference gradient and
    ||E g|| / ||g_ref|| (about 1 when unbiased)."""
    head = (f"gradient estimators: {g['repeats']} estimates each on a fixed batch of "
            f"{g['batch_size']} examples (no minibatch noise); reference: "
            f"{g['reference_samples']} samples per example; parameters: "
            + ", ".join(f"{k} {v}" for k, v in g["parameters"].items())
            + "\n  tr Cov: trace of the covariance; SNR: ||E g|| / sqrt(tr Cov); cos: mean "
            "cosine to the reference; norm: ||E g|| / ||reference|| (about 1 when unbiased)")
    cols = "".join(f" | {grp + ' tr Cov':>16s} {'SNR':>6s} {'cos':>6s} {'norm':>6s}"
                   for grp in GROUP_ORDER)
    lines = [head, f"  {'estimator':<11s} {'objective':<9s} {'S':>4s}{cols}"]
    rows = {(r["estimator"], r["samples"], r["group"]): r for r in g["rows"]}
    for est, s in dict.fromkeys((r["estimator"], r["samples"]) for r in g["rows"]):
        cells = "".join(_gradient_cells(rows[est, s, grp]) for grp in GROUP_ORDER)
        lines.append(f"  {est:<11s} {rows[est, s, 'encoder']['objective']:<9s} {s:>4d}{cells}")
    return "\n".join(lines)


def format_full_report(r: dict[str, Any]) -> str:
    """Standard figures plus every optional section present in ``r``."""
    parts = [format_report(r)]
    if "marginal" in r:
        parts.append(format_marginal(r["marginal"]))
    if "diagnostics" in r:
        parts.append(format_diagnostics(r["diagnostics"]))
    if "kde" in r:
        parts += ["nonparametric baselines:", "  " + r["kde"]["summary"],
                  "  " + r["kde"]["parzen"]["note"]]
    if "baselines" in r:
        parts.append(format_baselines(r))
    if "two_stage" in r:
        parts.append(format_two_stage(r["two_stage"]))
    if "generation" in r:
        parts.append(format_generation(r["generation"]))
    return "\n".join(parts)
