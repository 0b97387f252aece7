"""User-facing errors.

Every mistake a user can make (unknown model, missing weights, wrong data path, malformed
config or submission) raises :class:`RobcurveError` with one message that says what is
wrong, where, and how to fix it. The CLI prints it on one line and exits with code 2,
without a traceback.
"""

from __future__ import annotations


class RobcurveError(Exception):
    """An error caused by user input, with a message that says how to fix it."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        parts = [what]
        if where:
            parts.append(f"(at {where})")
        msg = " ".join(parts)
        if fix:
            msg += f". Fix: {fix}"
        super().__init__(msg)
