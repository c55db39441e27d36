"""One writer at a time: folder locks, files created once, worker processes that die with their parent.

A lock is a small JSON file (:class:`LockHolder`: pid, host, start time, what holds it) created
atomically: written to a temporary name, then hard-linked into place, which fails when the lock
already exists (so two creators can never both win, and nobody ever reads a half-written lock).
A second ``usssl ingest`` into one cache, or a second ``usssl run`` into one output folder, stops
with a :class:`LockError` that names the holder. A lock left by a process that no longer runs on
this machine (``kill -9``, a crash, a reboot) is stale: the next holder takes it over with a
warning. A lock held on another machine cannot be checked from here: the message says which
machine and how to release it by hand.

    >>> with folder_lock(cache / ".usssl-ingest.lock", "usssl ingest"):   # doctest: +SKIP
    ...     ...                                   # a second one raises LockError naming this process
    >>> create_exclusive(path, secrets.token_bytes(32))   # True: this call created it; False: one existed

:func:`die_with_parent` is the initializer of worker processes: they exit as soon as the process
that started them is gone, instead of writing on (or idling forever) after it was killed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from usssl.errors import UssslError

log = logging.getLogger(__name__)

PID_REUSE_SLACK_S = 2.0  # a live pid whose process started this long after the lock is another process
PARENT_POLL_S = 1.0  # how often a worker checks that its parent still runs (besides PR_SET_PDEATHSIG)
_READ_TRIES = 20  # a lock file may be read while a creator without hard links is still writing it


class LockError(UssslError):
    """Another process holds the lock of a folder (a second ingest into a cache, a second run)."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: ``what`` ("usssl ingest", ...) in process ``pid`` on ``host`` since
    ``started`` (seconds since the epoch); ``token`` tells one holding from another."""

    pid: int
    host: str
    started: float
    what: str
    token: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        where = "this machine" if self.host == socket.gethostname() else f"host {self.host}"
        return f"{self.what}, pid {self.pid} on {where}, started {when}"

    def running(self) -> bool | None:
        """True / False for a holder on this machine; None on another machine (cannot be checked)."""
        if self.host != socket.gethostname():
            return None
        return process_running(self.pid, self.started)


def process_running(pid: int, since: float | None = None) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie does not), and, given ``since``, is the
    process that was running then (not a later process that reuses the pid; Linux only)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    except OSError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (name) "
        if fields[0] == "Z":
            return False
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))  # fmt: skip
        start = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    return since is None or start <= since + PID_REUSE_SLACK_S


def create_exclusive(path: str | Path, data: bytes, mode: int = 0o600) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True when this call created it.

    The bytes go to a unique temporary name first, which is then hard-linked to ``path``: the link
    fails when ``path`` exists, so of many concurrent creators exactly one wins and the others read
    the winner's complete file. Where the file system has no hard links, ``O_EXCL`` creation is
    used (readers may then briefly see an empty file: :func:`read_lock` and the key reader retry).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")
    try:
        _write_new(tmp, data, mode)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FAT file systems)
            pass
    finally:
        tmp.unlink(missing_ok=True)
    try:
        _write_new(path, data, mode)
    except FileExistsError:
        return False
    return True


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have cleared bits of ``mode``
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lock(path: str | Path) -> LockHolder | None:
    """The holder written in lock file ``path``; None when there is no such file.

    Raises:
        LockError: the file exists but does not hold a lock usssl wrote.
    """
    path = Path(path)
    for _ in range(_READ_TRIES):
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LockError(f"{path}: cannot read this lock file ({exc})") from None
        try:
            raw = json.loads(text)
            return LockHolder(int(raw["pid"]), str(raw["host"]), float(raw["started"]), str(raw["what"]),
                              str(raw["token"]))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)  # being written by a creator without hard links
    raise LockError(f"{path}: this lock file cannot be read. If no usssl ingest or run is using "
                    f"{path.parent} now, delete {path} and try again")  # fmt: skip


def live_holder(path: str | Path) -> LockHolder | None:
    """The holder of lock ``path`` unless the lock is free or stale (its process has ended on this
    machine); a holder on another machine counts as live."""
    holder = read_lock(path)
    if holder is None or holder.running() is False:
        return None
    return holder


def held_message(path: Path, holder: LockHolder) -> str:
    """The one-line message for a lock ``path`` held by ``holder``: who, and what to do."""
    if holder.running() is None:
        todo = (f"Wait for it to finish; if it is no longer running (that machine crashed or was "
                f"restarted), delete {path} and try again")  # fmt: skip
    else:
        todo = f"Wait for it to finish, or stop it (kill {holder.pid}) and run this again"
    return f"{path.parent}: busy: {holder.describe()} is writing here; two at once would mix their files. {todo}"


class FolderLock:
    """The lock file ``path`` held by this process for ``what`` (see the module docstring).

    Example:
        >>> lock = FolderLock(out / ".usssl-run.lock", "usssl run").acquire()   # doctest: +SKIP
        >>> lock.release()                                                       # doctest: +SKIP
    """

    def __init__(self, path: str | Path, what: str) -> None:
        self.path, self.what = Path(path), what
        self.holder = LockHolder(os.getpid(), socket.gethostname(), time.time(), what, uuid.uuid4().hex)

    def acquire(self) -> FolderLock:
        """Take the lock (taking over a stale one with a warning).

        Raises:
            LockError: a live process holds it (the message names it), or its file is unreadable.
        """
        data = (json.dumps(asdict(self.holder), indent=2) + "\n").encode()
        for _ in range(10):
            if create_exclusive(self.path, data, 0o644):
                return self
            holder = read_lock(self.path)
            if holder is None:
                continue  # released meanwhile
            if holder.running() is not False:
                raise LockError(held_message(self.path, holder))
            if self._take_over(holder):
                log.warning("%s: %s stopped without finishing (that process no longer runs); taking "
                            "over its lock", self.path, holder.describe())  # fmt: skip
        raise LockError(f"{self.path}: could not take this lock (other processes keep taking it); "
                        "make sure only one usssl ingest or run uses this folder")  # fmt: skip

    def _take_over(self, stale: LockHolder) -> bool:
        """Move the stale lock aside atomically; True when what was moved is that stale lock."""
        aside = self.path.with_name(f"{self.path.name}.stale-{self.holder.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            moved = read_lock(aside)
        except LockError:
            moved = None
        if moved is not None and moved.token != stale.token:  # a new holder came in between: put it back
            try:
                os.link(aside, self.path)
            except OSError:
                pass
        aside.unlink(missing_ok=True)
        return moved is not None and moved.token == stale.token

    def release(self) -> None:
        """Remove the lock file if it is still this process's (never another holder's)."""
        try:
            holder = read_lock(self.path)
        except LockError:
            return
        if holder is not None and holder.token == self.holder.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def folder_lock(path: str | Path, what: str, enabled: bool = True) -> Iterator[FolderLock | None]:
    """Hold the lock file ``path`` for the ``with`` block (``enabled`` False: hold nothing, e.g. on
    the non-main ranks of a multi-process run).

    Raises:
        LockError: another live process holds it; the message names it and says what to do.
    """
    if not enabled:
        yield None
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(path, what) as lock:
        yield lock


def die_with_parent(parent_pid: int) -> None:
    """Worker-process initializer: exit when process ``parent_pid`` (the one that started it) ends.

    On Linux the kernel kills the worker when its parent dies (``PR_SET_PDEATHSIG``); elsewhere, and
    in case the parent died before this ran, a daemon thread checks the parent every
    ``PARENT_POLL_S`` seconds. Without this, the workers of a killed ingest kept writing shards and
    then waited forever for work.
    """
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError, ImportError):
        pass
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="usssl-parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)
