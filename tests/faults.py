"""Run ``vaekit`` with a simulated power cut inside a checkpoint save (the kill tests).

    python tests/faults.py STAGE:N train ...      # SIGKILL at STAGE of the N-th save

STAGE: ``model`` (model.safetensors written), ``trainer`` (trainer.safetensors written,
trainer.json not yet), ``manifest`` (manifest written, nothing renamed yet), ``rotate``
(the previous checkpoint moved to checkpoint.1, the new one not yet in place). The hook
wraps vaekit's file writes and renames from outside: the library has no test hook. An
empty spec runs vaekit unchanged.

    python tests/faults.py SIGTERM:N train ...    # a scheduler's SIGTERM after step N

sends the signal to the process itself right after its N-th training step (SIGINT too).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

STAGES = ("model", "trainer", "manifest", "rotate")


def signal_after(name: str, nth: int) -> None:
    """Send the signal ``name`` to this process right after its ``nth`` training step."""
    from vaekit.train import loop

    make_step = loop.make_step

    def counting(*args, **kwargs):
        step, status = make_step(*args, **kwargs)
        calls = [0]

        def counted(batch, i):
            out = step(batch, i)
            calls[0] += 1
            if calls[0] == nth:
                os.kill(os.getpid(), getattr(signal, name))
            return out

        return counted, status

    loop.make_step = counting


def install(spec: str) -> None:
    """Kill this process (SIGKILL) at ``STAGE:N`` of the N-th checkpoint save."""
    from vaekit.train import checkpoint

    stage, _, nth = spec.partition(":")
    if stage in ("SIGTERM", "SIGINT"):
        return signal_after(stage, int(nth))
    if stage not in STAGES or not nth.isdigit():
        raise SystemExit(f"fault spec {spec!r}: use STAGE:N with STAGE in {STAGES}")
    saves, written = [0], set()
    write, rename = checkpoint.write_synced, Path.rename

    def kill_at(now: str) -> None:
        if now == stage and saves[0] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)

    def write_synced(path: Path, data: bytes) -> None:
        write(path, data)
        name = Path(path).name
        if name == "model.safetensors":  # the first file of every save
            saves[0] += 1
            written.clear()
        written.add(name)
        kill_at({"model.safetensors": "model", "trainer.safetensors": "trainer",
                 "manifest.json": "manifest"}.get(name, ""))

    def rename_path(self: Path, target: str | Path) -> Path:
        if self.name == "checkpoint.new" and Path(target).name == "checkpoint" \
                and "manifest.json" in written:  # the save's own rotation, not a settle
            kill_at("rotate")
        return rename(self, target)

    checkpoint.write_synced = write_synced
    Path.rename = rename_path


if __name__ == "__main__":
    spec, argv = sys.argv[1], sys.argv[2:]
    if spec:
        install(spec)
    from vaekit.cli import main

    sys.exit(main(argv))
