"""Errors that reach the user as one paragraph and an exit code (DESIGN.md, exit codes).

0 ok · 1 runtime failure · 2 invalid spec, usage or input data · 3 a gate failed ·
130 interrupted (SIGINT, Ctrl-C) · 143 terminated (SIGTERM).
"""

from __future__ import annotations


class SnnError(Exception):
    """A failure the user can act on: `str(error)` names the problem and the fix."""

    exit_code = 1


class SpecError(SnnError):
    """The spec is invalid (unknown key, wrong type, missing environment variable)."""

    exit_code = 2


class InputError(SnnError):
    """Input data or a CLI argument is unusable (missing column, empty file, NaN label)."""

    exit_code = 2


class ArtifactError(SnnError):
    """A bundle or step artifact is missing or corrupted."""

    exit_code = 2


class TrackingError(SnnError):
    """The MLflow tracking server cannot be reached or refused a call."""

    exit_code = 1


class ServingError(SnnError):
    """A scoring server cannot be reached or answered a request with an error."""

    exit_code = 1


class TrainingDiverged(SnnError):
    """The training loss or the model's predictions became NaN or infinite: nothing is written."""

    exit_code = 1


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread by the CLI's handler so that `finally` blocks and
    context managers clean up (scratch folders removed, MLflow runs ended as KILLED). A
    BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it."""

    exit_code = 143
