"""One ingest per cache (issue 12): a second concurrent ingest stops with a message naming the first
and the first's index holds every recording; the workers of a killed ingest die with it, and the
next ingest takes over its stale lock with a warning and completes the cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures_video as fx  # noqa: E402

from usssl.cli import main  # noqa: E402
from usssl.config import IngestConfig  # noqa: E402
from usssl.data.cache import Cache  # noqa: E402
from usssl.data.ingest import INGEST_LOCK, ingest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N_SCANS = 16
KEY = "concurrency-key"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("corpus") / "SRC"
    fx.make_corpus(src, n_subjects=N_SCANS, seconds=2.0)
    return src


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("USSSL_SUBJECT_KEY", KEY)


def _start_ingest(src: Path, out: Path, workers: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "USSSL_SUBJECT_KEY": KEY, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "usssl.cli", "ingest", str(src), "--out", str(out), "--size", "16", "16",
               "--fps", "15", "--workers", str(workers)]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _workers_of(pid: int) -> list[int]:
    """Pids of the multiprocessing workers (``spawn_main``) whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].split()[0] == "Z"  # a zombie no longer runs


def test_a_second_ingest_stops_with_the_lock_message_and_the_first_completes(corpus, tmp_path, capsys):
    out = tmp_path / "cache"
    first = _start_ingest(corpus, out, workers=1)
    try:
        _wait_for(lambda: (out / INGEST_LOCK).exists() or first.poll() is not None, what="the first lock")
        assert first.poll() is None, first.communicate()[0]
        code = main(["ingest", str(corpus), "--out", str(out), "--size", "16", "16", "--fps", "15", "--workers", "1"])
        message = capsys.readouterr().err
        assert code == 1 and "busy: usssl ingest, pid " + str(first.pid) + " on this machine" in message
        assert "started" in message and f"kill {first.pid}" in message and "Traceback" not in message
        log, _ = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, log
    assert len(Cache(out).index) == N_SCANS and not (out / INGEST_LOCK).exists()


def test_a_killed_ingest_takes_its_workers_along_and_the_next_one_takes_over(corpus, tmp_path, caplog):
    out = tmp_path / "cache"
    killed = _start_ingest(corpus, out, workers=2)
    try:
        _wait_for(lambda: len(_workers_of(killed.pid)) == 2 or killed.poll() is not None, what="two workers")
        workers = _workers_of(killed.pid)
        time.sleep(0.5)  # let them start on the recordings
        assert killed.poll() is None, killed.communicate()[0]
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        killed.kill()
    _wait_for(lambda: all(_gone(w) for w in workers), timeout_s=10, what="the orphaned workers to exit")
    assert (out / INGEST_LOCK).exists()  # left behind by kill -9: stale
    with caplog.at_level("WARNING", logger="usssl.engine.lock"):
        summary = ingest([corpus], out, IngestConfig(size=(16, 16), fps=15, workers=1), progress=False)
    assert f"pid {killed.pid}" in caplog.text and "taking over its lock" in caplog.text
    assert summary.n_ok == N_SCANS and len(Cache(out).index) == N_SCANS
    assert not list((out / "shards").glob(".tmp-*"))  # partial shards of the killed run removed
