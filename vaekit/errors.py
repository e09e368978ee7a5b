"""User-facing errors: one line saying what is wrong and how to fix it.

The CLI catches :class:`VaekitError` and prints ``error: <what>; <fix>`` with a non-zero
exit code instead of a traceback. Library callers get an ordinary exception.
"""

from __future__ import annotations


class VaekitError(Exception):
    """An error the user can fix. ``str(err)`` is a single line: problem, then fix."""

    exit_code = 2

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


class DataError(VaekitError):
    """A dataset is missing, malformed, or has values the model cannot use."""


class ConfigError(VaekitError):
    """A configuration value or combination of flags is invalid."""


class CheckpointError(VaekitError):
    """A run directory or checkpoint is missing, corrupt, or does not match the request."""


def error_line(err: BaseException, rank: int = 0, lost: bool = False) -> tuple[str, int]:
    """(one line ``error: <problem>; <fix>``, exit code) for any exception: user errors exit
    2, anything else is a bug in vaekit (exit 1); ``lost``: a collective of ranks failed."""
    if isinstance(err, VaekitError):
        return f"error: {err}", err.exit_code
    if isinstance(err, BrokenPipeError):  # the reader of our output went away
        return "", 1
    if isinstance(err, OSError):
        where = f" {err.filename}" if err.filename else ""
        return (f"error: cannot access{where}: {err.strerror or err}; check the path, its "
                "permissions and the free space", 2)
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if lost:
        return (f"error: rank {rank} lost the other ranks of the job ({text[:160]}); another "
                "rank stopped (its own output says why) or the network failed: fix that and "
                "continue with `--resume RUN_DIR`", 1)
    if isinstance(err, MemoryError) or "out of memory" in text or "can't allocate" in text:
        return (f"error: out of memory ({text[:200]}); use smaller sizes (--batch-size, "
                "--memory-mb, -n, --hidden)", 2)
    return (f"error: internal error {type(err).__name__}: {text[:300]}; this is a bug in "
            "vaekit: run again with `vaekit --debug ...` and report the traceback", 1)
