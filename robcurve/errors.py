"""User-facing errors.

Every mistake a user can make (unknown model, missing weights, wrong data path, malformed
config or submission) raises :class:`RobcurveError` with one message that says what is
wrong, where, and how to fix it. The CLI prints it on one line and exits with code 2,
without a traceback (``robcurve --debug ...`` or ``ROBCURVE_DEBUG=1`` shows it).

The subclasses let API users catch one kind of mistake; every one of them is a
``RobcurveError``, and the ones about argument values are also ``ValueError``.
"""

from __future__ import annotations


def one_line(text: object, limit: int = 600) -> str:
    """``text`` as a single line: line breaks and runs of blanks become one space, cut at ``limit``."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


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


class ConfigError(RobcurveError, ValueError):
    """A run config (YAML file, flag or ``--set``) that is malformed or out of range."""


class InputError(RobcurveError, ValueError):
    """A bad argument to a public API function (a budget outside its range, a wrong shape)."""


class UnsafeFileError(RobcurveError):
    """A file that asks to run code or to build objects robcurve never reads from data files."""


class DataError(RobcurveError):
    """A dataset file that is missing, damaged or holds something other than the dataset."""


class ModelError(RobcurveError):
    """A model that cannot be built, loaded, or run on the data it is given."""
