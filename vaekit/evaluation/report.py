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
             _line("KL(q(z|x) || p(z)) (analytic)", r["kl"], r["kl_se"], None)]
    if "iwae" in r:
        lines.append(_line(f"IWAE-{r['iwae_k']} bound on log p(x)", r["iwae"], r["iwae_se"],
                           r.get("iwae_bpd")))
    lines.append(f"  active latent units (Cov_x E_q[z_u] > 0.01): "
                 f"{r['active_units']} of {r['latent_dim']}")
    for key, val in r.items():
        if key.startswith("likelihood_"):
            lines.append(f"  learned {key[len('likelihood_'):]}: {val:.6g}")
    return "\n".join(lines)
