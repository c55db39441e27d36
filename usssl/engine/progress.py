"""One progress style for long work: ingest, the synthetic corpus, predict and training.

``progress(...)`` yields a small handle with ``advance(n)``, ``reset(description, total)``; with
``enabled=False`` (or no work) every call is a no-op, so callers never branch. On a terminal it is a
rich bar; when the output is not a terminal (a log file, a cluster job, CI) it writes plain log lines
instead (``ingest: 6/12 (50%), 0:00:41 elapsed``, at every tenth of the work and at the end), so log
files hold no carriage-return noise. ``training_bar`` gives Lightning the same two styles (rich's bar, or
one line per epoch).

    >>> with progress("ingest", total=len(jobs), enabled=True) as bar:
    ...     for job in jobs:
    ...         run(job)
    ...         bar.advance()
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

log = logging.getLogger(__name__)

STEPS = 10
"""A plain-line bar reports each tenth of its total (and the end)."""
EVERY_S = 60.0
"""... and at least once a minute while an item takes long (or the total is unknown)."""


def is_terminal() -> bool:
    """Whether progress goes to an interactive terminal (stdout is a TTY)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


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


class PlainBar(_Bar):
    """Progress as log lines: ``<description>: done/total (pct%), elapsed`` at each tenth and the end."""

    def __init__(self, description: str, total: int | None) -> None:
        super().__init__()
        self.reset(description, total)

    def reset(self, description: str, total: int | None = None) -> None:
        self.description, self.total, self.done = description, total, 0
        self.start = self.last = time.monotonic()
        self.reported = 0  # tenths reported so far

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        tenth = STEPS * self.done // self.total if self.total else 0
        if tenth > self.reported or now - self.last >= EVERY_S:
            self.reported, self.last = max(tenth, self.reported), now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = timedelta(seconds=round((now or time.monotonic()) - self.start))
        if self.total:
            return f"{self.description}: {self.done}/{self.total} ({100 * self.done / self.total:.0f}%), {elapsed} elapsed"
        return f"{self.description}: {self.done} done, {elapsed} elapsed"


@contextmanager
def progress(description: str, total: int | None, enabled: bool = True, transient: bool = False,
             counts: bool = False) -> Iterator[_Bar]:
    """A progress bar for ``total`` items (``counts``: show "n/N" and the time left on a terminal), plain
    log lines when stdout is not a terminal, or a no-op handle when ``enabled`` is false or ``total`` is 0."""
    if not enabled or total == 0:
        yield _Bar()
        return
    if not is_terminal():
        yield PlainBar(description, total)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (description, BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) if counts else ()
    with Progress(*columns, transient=transient) as bar:
        yield _Bar(bar, bar.add_task(description, total=total))


def training_bar(refresh_rate: int = 1):
    """The Lightning progress callback in the same style: rich's bar on a terminal, else one log line per
    epoch with the epoch's logged ``*_epoch`` metrics."""
    from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

    if is_terminal():
        return RichProgressBar(refresh_rate=refresh_rate, leave=False)

    class EpochLines(ProgressBar):
        """One plain line per training epoch (for log files)."""

        def __init__(self) -> None:
            super().__init__()
            self.enabled = True

        def disable(self) -> None:
            self.enabled = False

        def enable(self) -> None:
            self.enabled = True

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if not self.enabled or trainer.global_rank != 0:
                return
            metrics = {k[: -len("_epoch")]: float(v) for k, v in trainer.callback_metrics.items()
                       if k.endswith("_epoch")}  # fmt: skip
            shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
            log.info("epoch %d/%s: %d steps%s", trainer.current_epoch + 1, trainer.max_epochs, trainer.global_step,
                     f"; {shown}" if shown else "")

    return EpochLines()
