"""Folder locks: a live holder refuses a second one with its pid, host and start time; a dead or
replaced holder's lock is taken over with a warning; another machine's is never taken; release never
removes someone else's lock; exclusive creation has exactly one winner; a run refuses a busy
output folder."""

from __future__ import annotations

import json
import logging
import multiprocessing
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from usssl.engine.lock import FolderLock, LockError, create_exclusive, folder_lock, live_holder, read_lock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tiny_raw  # noqa: E402


def _lock_file(path: Path, pid: int, started: float | None = None, host: str | None = None,
               what: str = "usssl ingest") -> Path:  # fmt: skip
    """A lock as another usssl process would have written it."""
    holder = {"pid": pid, "host": host or socket.gethostname(), "started": time.time() if started is None else started,
              "what": what, "token": uuid.uuid4().hex}  # fmt: skip
    path.write_text(json.dumps(holder))
    return path


@pytest.fixture
def sleeper():
    """A live process on this machine (another holder's pid)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_live_holder_refuses_a_second_with_its_pid_host_and_start(tmp_path, sleeper):
    path = _lock_file(tmp_path / ".lock", sleeper.pid, started=time.time() - 1)
    with pytest.raises(LockError) as info:
        FolderLock(path, "usssl ingest").acquire()
    message = str(info.value)
    assert message.startswith(f"{tmp_path}: busy: usssl ingest, pid {sleeper.pid} on this machine, started ")
    assert f"kill {sleeper.pid}" in message and "\n" not in message
    assert read_lock(path).pid == sleeper.pid  # untouched


def test_a_dead_holders_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = _dead_pid()
    path = _lock_file(tmp_path / ".lock", dead)
    assert live_holder(path) is None
    with caplog.at_level(logging.WARNING, logger="usssl.engine.lock"):
        with folder_lock(path, "usssl run") as lock:
            assert read_lock(path).token == lock.holder.token and read_lock(path).what == "usssl run"
    assert f"pid {dead} on this machine" in caplog.text and "taking over its lock" in caplog.text
    assert not path.exists()  # released at the end of the block


def test_a_reused_pid_does_not_keep_an_old_lock(tmp_path, sleeper):
    path = _lock_file(tmp_path / ".lock", sleeper.pid, started=time.time() - 3600)  # the pid started later
    assert live_holder(path) is None
    FolderLock(path, "usssl ingest").acquire().release()


def test_another_machines_lock_is_never_taken(tmp_path):
    path = _lock_file(tmp_path / ".lock", _dead_pid(), host="node-17.cluster")
    with pytest.raises(LockError, match=r"pid \d+ on host node-17.cluster.*delete .*\.lock and try again"):
        FolderLock(path, "usssl ingest").acquire()


def test_release_leaves_another_holders_lock(tmp_path):
    lock = FolderLock(tmp_path / ".lock", "usssl ingest").acquire()
    _lock_file(lock.path, 12345)  # someone replaced it (a takeover by hand)
    lock.release()
    assert read_lock(lock.path).pid == 12345


def test_an_unreadable_lock_is_an_error_naming_it(tmp_path):
    path = tmp_path / ".lock"
    path.write_text("not a lock")
    with pytest.raises(LockError, match=r"\.lock: this lock file cannot be read"):
        FolderLock(path, "usssl ingest").acquire()


def _create(path: str, barrier, results) -> None:
    barrier.wait()
    mine = uuid.uuid4().bytes
    results.put((create_exclusive(path, mine), mine))


def test_exclusive_creation_has_exactly_one_winner(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):
        path = tmp_path / f"file-{round_}"
        barrier, results = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_create, args=(str(path), barrier, results)) for _ in range(8)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        winners = [data for won, data in outcomes if won]
        assert len(winners) == 1 and path.read_bytes() == winners[0]
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")) == []


def test_a_second_run_into_one_output_folder_stops_naming_the_first(tmp_path, sleeper, capsys):
    from usssl.cli import main
    from usssl.pipeline import RUN_LOCK

    out = tmp_path / "run"
    out.mkdir()
    _lock_file(out / RUN_LOCK, sleeper.pid, started=time.time() - 1, what="usssl run")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_raw(out)))
    assert main(["run", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"busy: usssl run, pid {sleeper.pid} on this machine" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [RUN_LOCK]  # nothing written, no MLflow store
