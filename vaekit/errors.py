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
