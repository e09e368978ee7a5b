"""Count what one vaekit command does to a run directory: config parses, checkpoint file
hashes, model builds (real and on the meta device), data preparations and ELBO passes.

    python scripts/trace_command.py evaluate RUN_DIR --loglik 1000
    python scripts/trace_command.py train --two-stage --data ring:n=300 --out /tmp/r ...

The counts come from a profile hook on the functions that do each thing (whatever module
calls them), so they are the same however the code above them is arranged.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# (what, module file suffix, function name): the one function that does each thing
WATCHED = {
    "config parses": ("vaekit/config.py", "from_dict"),
    "checkpoint file hashes": ("vaekit/io.py", "sha256_file"),
    "model builds": ("vaekit/models/build.py", "build_model"),
    "data preparations": ("vaekit/data/pipeline.py", "prepare_data"),
    "dataset loads": ("vaekit/data/datasets.py", "load_dataset"),
}


def trace(argv: list[str]) -> tuple[int, dict[str, int]]:
    """Run ``vaekit ARGV`` in this process; (exit code, {what: calls})."""
    import torch

    from vaekit.cli import main

    counts: Counter[str] = Counter()
    targets = {(suffix, name): what for what, (suffix, name) in WATCHED.items()}

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        for (suffix, name), what in targets.items():
            if code.co_name == name and code.co_filename.endswith(suffix):
                if what == "model builds" and torch.empty(0).device.type == "meta":
                    counts["model builds on the meta device"] += 1
                else:
                    counts[what] += 1

    sys.setprofile(hook)
    try:
        code = main(argv)
    finally:
        sys.setprofile(None)
    return code, {what: counts.get(what, 0) for what in
                  [*WATCHED, "model builds on the meta device"]}


def main_cli() -> int:
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    json_out = None
    if argv[0] == "--json":
        json_out, argv = Path(argv[1]), argv[2:]
    code, counts = trace(argv)
    print(f"vaekit {' '.join(argv)} -> exit {code}")
    for what, n in counts.items():
        print(f"  {what:34s} {n}")
    if json_out is not None:
        json_out.write_text(json.dumps({"argv": argv, "exit": code, "counts": counts}) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main_cli())
