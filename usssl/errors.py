"""Errors a user can cause: each names the file or key and says what to do.

Programmer errors stay plain ``assert``/``TypeError``; everything a clinician can trigger from a
YAML, a folder of data or the command line is a :class:`UssslError`, which the CLI prints without
a traceback.
"""

from __future__ import annotations


class UssslError(Exception):
    """Base class of every error a user can cause and fix."""

    exit_code: int = 1


class ConfigError(UssslError):
    """A pipeline YAML or ``--set`` override is wrong (exit code 2)."""

    exit_code = 2


class DataError(UssslError):
    """Input data cannot be read or does not match what the pipeline expects."""


class CacheMismatchError(DataError):
    """An existing cache was written with other ingest settings or another usssl version."""
