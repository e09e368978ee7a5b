"""Print the README's speed tables (Markdown) from the benchmarks' JSON results.

    python benchmarks/summarize.py     # reads benchmarks/results/bench_{train,loglik}.json

Every figure comes from those files; nothing is measured here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = {
    "pytorch-examples": "pytorch/examples style (per-item `Dataset` + `DataLoader`)",
    "tensor-loop": "the same model, a loop indexing one in-memory tensor",
    "pythae": "pythae 0.1.2 VAE, same networks, manual loop on its loss",
    "vaekit": "**vaekit** (hand-written ELBO gradients, fused Adam)",
    "vaekit-autograd": "vaekit through autograd (`--no-fused`)",
    "vaekit-bf16": "**vaekit `--precision bf16`** (bf16 matmuls, hand-written gradients)",
    "vaekit-bf16-autocast": "vaekit bf16 by autocast + autograd (`--no-fused`)",
    "vaekit-compile": "vaekit with `--compile` (autograd)",
    "vaekit-fast": "vaekit `--preset fast` (its batch size and LR schedule)",
}


def num(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def training(rec: dict[str, Any]) -> list[str]:
    inter = rec.get("interleaved", {}).get("results", {})
    iso = rec.get("throughput", {})
    out = ["| contender | images/s, median (fastest turn) | vaekit fp32 is | vaekit bf16 is "
           "| ÷ tensor-loop | test -ELBO after 2 epochs |", "|---|---|---|---|---|---|"]
    for name, r in inter.items():
        vk = name.startswith("vaekit")
        cyc = r["cycle_images_per_s"]
        mine = (f"{ratio(r['this_over_tensor_loop'])} ({ratio(r['fastest_over_tensor_loop'])})"
                if vk else "")
        out.append(f"| {LABELS.get(name, name)} | {num(r['images_per_s'])} ({num(max(cyc))}) | "
                   + ("| |" if vk else f"{ratio(r['vaekit_over_this'])} "
                      f"({ratio(r['vaekit_fastest_over_this'])}) | "
                      f"{ratio(r['vaekit_bf16_over_this'])} |")
                   + f" {mine} | {num(iso.get(name, {}).get('test_neg_elbo'), 2)} |")
    return out


def ceiling(rec: dict[str, Any]) -> list[str]:
    c, mm = rec.get("ceiling", {}), rec.get("matmul", {})
    out = ["| precision | matmul GFLOP/s (this model's shapes) | matmul-bound ceiling, images/s "
           "| vaekit's fastest turn | fraction |", "|---|---|---|---|---|"]
    for key in ("fp32", "bf16"):
        if key in c:
            out.append(f"| {key} | {mm[key]['aggregate_gflops']:.0f} | "
                       f"{num(c[key]['ceiling_images_per_s'])} | {num(c[key]['vaekit'])} | "
                       f"{c[key]['fraction']:.2f} |")
    return out


def profile(rec: dict[str, Any]) -> list[str]:
    p = rec.get("profile", {})
    if "ms_per_step" not in p:
        return []
    parts = ", ".join(f"{k.replace('_', '/')} {p['ms_per_step'][k]:.2f} ms ({p['percent'][k]:.0f}%)"
                      for k in p["ms_per_step"])
    return [f"Profile of one fp32 step (batch 128, the quietest of 5 profiles): {parts}; "
            f"loading and binarizing a batch {p['loader_ms_per_batch_not_profiled']:.2f} ms."]


def ttq(rec: dict[str, Any]) -> list[str]:
    t = rec.get("time_to_quality", {})
    if "curves" not in t:
        return []
    curves, names = t["curves"], list(t["curves"])
    out = [f"Target: the reference loop's test -ELBO after 10 epochs, "
           f"{t['target_test_neg_elbo']:.2f} nats; training seconds are medians over "
           f"{len(t['rounds']['reference'])} interleaved rounds.", "",
           "| epoch | " + " | ".join(f"{n}: s, test -ELBO" for n in names) + " |",
           "|---|" + "---|" * len(names)]
    for i in range(max(len(c) for c in curves.values())):
        cells = [f"{c[i]['train_seconds']:.1f} s, {c[i]['test_neg_elbo']:.2f}" if i < len(c)
                 else "" for c in curves.values()]
        out.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    out.append("")
    ref_hit = next(r for r in curves["reference"]
                   if r["test_neg_elbo"] <= t["target_test_neg_elbo"])
    for name, s in t["summary"].items():
        if not s["speedup"]:
            out.append(f"- {name}: did not reach the target")
            continue
        hit = curves[name][s["epoch"] - 1]
        rounds = ", ".join(f"{a / b:.2f}x" for a, b in zip(ref_hit["round_train_seconds"],
                                                            hit["round_train_seconds"],
                                                            strict=True))
        out.append(f"- {name}: epoch {s['epoch']}, {s['seconds']:.1f} s of training vs "
                   f"{t['reference_seconds']:.1f} s: **{s['speedup']:.2f}x** (round by round: "
                   f"{rounds})")
    est = t.get("estimate_from_interleaved")
    if est:
        out.append(f"- the same from the interleaved throughput (robust to the host's drift): "
                   f"{est['epoch_ratio']:.1f}x fewer epochs × {est['speed_ratio']:.2f}x the "
                   f"reference's images/s = **{est['speedup']:.2f}x** (fastest turns: "
                   f"{est['speedup_fastest']:.2f}x)")
    return out


def scaling(rec: dict[str, Any]) -> list[str]:
    rows = rec.get("scaling", {}).get("rows", [])
    out = ["| latent | hidden | training set | images/s, median (fastest turn) | s/epoch |",
           "|---|---|---|---|---|"]
    for r in rows:
        fastest = f" ({num(r['fastest_images_per_s'])})" if "fastest_images_per_s" in r else ""
        out.append(f"| {r['latent']} | {r['hidden']} | {num(r.get('n_train'))} | "
                   f"{num(r['images_per_s'])}{fastest} | {num(r.get('seconds_per_epoch'), 2)} |")
    return out if rows else []


def loglik(rec: dict[str, Any]) -> list[str]:
    c = rec.get("contenders", {})
    out = ["| contender | K | seconds | peak memory MB | mean log p(x) | vs typical |",
           "|---|---|---|---|---|---|"]
    for name, r in c.items():
        if "seconds" not in r:
            continue
        diff = (f"{r['diff_vs_typical']:+.3f} ± {r['diff_se']:.3f}" if "diff_vs_typical" in r
                else "")
        out.append(f"| {name} | {r['k']:,} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
                   f"{r['mean_log_px']:.3f} | {ratio(r.get('speedup_vs_typical'))} {diff} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    a = ap.parse_args()
    train = json.loads((a.results / "bench_train.json").read_text())
    m = train["machine"]
    print(f"Machine: {m.get('cpu', '?')}, {m.get('torch_threads', '?')} threads, torch "
          f"{m.get('torch', '?')}.\n")
    for title, lines in (("Training", training(train)), ("Matmul ceiling", ceiling(train)),
                         ("Profile", profile(train)), ("Time to quality", ttq(train)),
                         ("Scaling", scaling(train))):
        print(f"### {title}\n\n" + "\n".join(lines) + "\n")
    path = a.results / "bench_loglik.json"
    if path.exists():
        ll = json.loads(path.read_text())
        print(f"### log p(x), {ll['n']:,} test images\n\n" + "\n".join(loglik(ll)))


if __name__ == "__main__":
    main()
