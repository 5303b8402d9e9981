"""The exception hierarchy and the exit codes the command line maps them to.

User errors print one line (problem and fix) and exit with INPUT_ERROR; an unreachable or missed budget
exits with BUDGET_MISSED so a product build can gate on it; anything else is an internal error whose
traceback is shown with --verbose.
"""
from __future__ import annotations

EXIT_OK = 0             # budget met
EXIT_BUDGET_MISSED = 1  # budget missed or unreachable
EXIT_INPUT_ERROR = 2    # bad input: file, architecture, target, profile, calibration data, options
EXIT_INTERNAL_ERROR = 3  # a bug or an environment problem; rerun with --verbose for the traceback


class CompressError(Exception):
    """An error the user can fix; the message is one line naming the problem and the fix."""

    exit_code = EXIT_INPUT_ERROR


class InputError(CompressError):
    """A bad input file, option or data."""


class ModelLoadError(InputError):
    pass


class CalibrationError(InputError):
    pass


class BudgetError(CompressError):
    """The budget cannot be met: the message states the best reachable value."""

    exit_code = EXIT_BUDGET_MISSED

    def __init__(self, message: str, best: dict | None = None):
        super().__init__(message)
        self.best = best or {}


class PruningError(CompressError):
    """Pruning produced an invalid model that could not be avoided; this is a bug worth reporting."""

    exit_code = EXIT_INTERNAL_ERROR
