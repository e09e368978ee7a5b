"""Human-readable report of evaluation figures: every number names unit and estimator."""

from __future__ import annotations

from typing import Any


def _line(label: str, value: float, se: float | None, bpd: float | None) -> str:
    s = f"  {label:<34s} {value:10.3f} nats/example"
    if se is not None:
        s += f" (± {se:.3f} s.e.)"
    if bpd is not None:
        s += f"   {bpd:.4f} bits/dim"
    return s


def format_report(r: dict[str, Any]) -> str:
    """Multi-line summary of :func:`vaekit.evaluation.evaluate` output."""
    lines = [f"{r.get('dataset', '?')} {r.get('split', '')} set, {r['n_examples']} examples, "
             f"{r.get('likelihood', '?')} likelihood",
             f"  protocol: {r.get('protocol', 'n/a')}",
             _line("ELBO (1-sample, analytic KL)", r["elbo"], r["elbo_se"], r.get("elbo_bpd")),
             _line("E_q[log p(x|z)] (1 sample)", r["log_px_z"], r["log_px_z_se"], None),
             _line(f"KL(q(z|x) || p(z)) ({r.get('kl_estimator', 'analytic')})", r["kl"],
                   r["kl_se"], None)]
    if "iwae" in r:
        lines.append(_line(f"IWAE-{r['iwae_k']} bound on log p(x)", r["iwae"], r["iwae_se"],
                           r.get("iwae_bpd")))
    lines.append(f"  active latent units (Cov_x E_q[z_u] > 0.01): "
                 f"{r['active_units']} of {r['latent_dim']}")
    for key, val in r.items():
        if key.startswith("likelihood_"):
            lines.append(f"  learned {key[len('likelihood_'):]}: {val:.6g}")
    return "\n".join(lines)


def _estimator_lines(name: str, e: dict[str, Any]) -> list[str]:
    lines = [_line(f"{name}, K={e['k']}", e["log_px"], e["log_px_se"], e.get("bpd")),
             f"  {'':34s} ESS of the K weights: median {e['ess_median']:.1f}, "
             f"5th percentile {e['ess_p5']:.1f} (of K={e['k']})"]
    return lines


def format_marginal(m: dict[str, Any]) -> str:
    """The marginal-likelihood section: both estimators, the ELBO gap and the IWAE curve."""
    lines = ["marginal likelihood log p(x):"]
    lines += _estimator_lines("importance sampling z~q(z|x)", m["importance"])
    if "naive" in m:
        lines += _estimator_lines("naive estimator z~p(z)", m["naive"])
    gap = m["elbo_gap"]
    lines.append(f"  gap log p_hat(x) - ELBO (~ KL(q(z|x)||p(z|x))): {gap['mean']:.3f} "
                 f"nats/example (± {gap['se']:.3f} s.e.)")
    curve = ", ".join(f"k={k}: {v:.3f}" for k, v in m["iwae_curve"].items())
    lines.append(f"  IWAE-k bound (nats/example): {curve}")
    return "\n".join(lines)


def format_diagnostics(d: dict[str, Any]) -> str:
    kl = d["kl_per_dim"]
    lines = [f"latent diagnostics: {d['active_units']} of {d['latent_dim']} units active "
             f"(Cov_x E_q[z_j] > {d['active_threshold']}); {d['used_dims']} used (mean posterior "
             f"variance < {d['used_threshold']}: the intrinsic dimension, Dai & Wipf)"]
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
    if "two_stage" in r:
        parts.append(format_two_stage(r["two_stage"]))
    if "generation" in r:
        parts.append(format_generation(r["generation"]))
    return "\n".join(parts)
