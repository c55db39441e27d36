"""One progress-bar style for long work (ingest, the synthetic corpus, predict).

``progress(...)`` yields a small handle with ``advance(n)``, ``reset(description, total)``; with
``enabled=False`` (or no work) every call is a no-op, so callers never branch. Training stages use
Lightning's own bar (``engine/trainer.py``).

    >>> with progress("ingest", total=len(jobs), enabled=True) as bar:
    ...     for job in jobs:
    ...         run(job)
    ...         bar.advance()
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class _Bar:
    """The handle ``progress`` yields: a rich task, or nothing."""

    def __init__(self, bar=None, task=None) -> None:
        self.bar, self.task = bar, task

    def advance(self, n: int = 1) -> None:
        """``n`` more items done."""
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def reset(self, description: str, total: int | None = None) -> None:
        """Start a new task on the same bar (``total`` None: an indeterminate spinner)."""
        if self.bar is not None:
            self.bar.remove_task(self.task)
            self.task = self.bar.add_task(description, total=total)


@contextmanager
def progress(description: str, total: int | None, enabled: bool = True, transient: bool = False,
             counts: bool = False) -> Iterator[_Bar]:
    """A rich progress bar for ``total`` items (``counts``: show "n/N" and the time left), or a no-op
    handle when ``enabled`` is false or ``total`` is 0."""
    if not enabled or total == 0:
        yield _Bar()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (description, BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) if counts else ()
    with Progress(*columns, transient=transient) as bar:
        yield _Bar(bar, bar.add_task(description, total=total))
