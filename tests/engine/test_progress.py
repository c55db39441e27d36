"""One progress style: rich on a terminal, plain log lines (no carriage returns) otherwise."""

from __future__ import annotations

import logging

from usssl.engine import progress as progress_module
from usssl.engine.progress import PlainBar, progress, training_bar


def test_plain_lines_at_each_tenth_when_not_a_terminal(caplog, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "is_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="usssl.engine.progress"):
        with progress("ingest", total=20, counts=True) as bar:
            assert isinstance(bar, PlainBar)
            for _ in range(20):
                bar.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10  # 2/20, 4/20, … 20/20
    assert lines[0].startswith("ingest: 2/20 (10%), 0:00:0") and lines[-1].startswith("ingest: 20/20 (100%)")
    assert "\r" not in capsys.readouterr().out + "".join(lines)


def test_disabled_or_empty_progress_is_a_no_op(caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "is_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="usssl.engine.progress"):
        for enabled, total in ((False, 5), (True, 0)):
            with progress("x", total=total, enabled=enabled) as bar:
                bar.advance(5)
                bar.reset("y", 3)
    assert caplog.records == []


def test_training_bar_is_rich_on_a_terminal_and_epoch_lines_otherwise(monkeypatch):
    from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

    monkeypatch.setattr(progress_module, "is_terminal", lambda: True)
    assert isinstance(training_bar(5), RichProgressBar)
    monkeypatch.setattr(progress_module, "is_terminal", lambda: False)
    bar = training_bar(5)
    assert isinstance(bar, ProgressBar) and not isinstance(bar, RichProgressBar)
