"""Checks of a loaded pipeline against the file system, made before anything is written.

``usssl validate`` and ``usssl run`` call :func:`check_inputs` and :func:`check_outputs` right after
``load_config``, so a wrong path is one line before any work, instead of a failure minutes into
the run after an MLflow store was created in the wrong place.

Relative paths in a pipeline YAML are read from the **working directory** (the folder ``usssl``
is run in), not from the YAML's folder: the shipped YAMLs, the Makefile and the docs rely on it.
Every error names the absolute path it looked for, and says so when the path exists relative to
the YAML's folder instead.

    >>> check_inputs(cfg, "pipelines/demo.yaml")      # the paths it checked, resolved
    []
    >>> check_outputs(cfg, "pipelines/demo.yaml")     # a write test that leaves nothing behind
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from usssl.config.base import REDACTED
from usssl.errors import ConfigError

PSEUDO_FILESYSTEMS = ("/proc", "/sys")
"""The kernel's pseudo-filesystems: nothing usssl writes can live there."""
MIN_FREE_BYTES = 64 * 2**20
"""An output folder on a disk with less free space than this is refused (a run needs more)."""
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXT = ("No space left on device", "database or disk is full", "Disk quota exceeded")
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


@dataclass(frozen=True)
class InputPath:
    """One path a pipeline reads: its key path, the value as written, and what it must be."""

    key: str  # e.g. "data.sources[0]"
    value: str
    kind: str  # "source" (file or folder), "file", "cache" (a folder) or "model folder"


def absolute(value: str | Path) -> Path:
    """``value`` as the absolute path the stages will use: relative to the working directory, ``..``
    folded (``~`` is not expanded: the stages do not expand it either)."""
    return Path(os.path.abspath(str(value)))


TILDE = "; '~' is not expanded in a pipeline YAML: write the full path (e.g. /home/you/...)"


def input_paths(cfg) -> list[InputPath]:
    """Every input path the pipeline's stages will read: ``data.sources`` and the side tables when it has
    an ingest stage (else the cache folder), and each pretrain stage's ``speech.pretrained_path``
    (wav2vec2/HuBERT)."""
    out: list[InputPath] = []
    d = cfg.data
    if any(e.kind == "ingest" for e in cfg.stages):
        out += [InputPath(f"data.sources[{i}]", s, "source") for i, s in enumerate(d.sources)]
        out += [InputPath(f"data.{k}", getattr(d, k), "file") for k in ("labels_csv", "gaze_csv", "subjects_csv")
                if getattr(d, k)]
    elif any(e.kind != "compare" for e in cfg.stages):  # no ingest stage: the stages read an existing cache
        out.append(InputPath("data.cache_dir" if d.cache_dir else "output_dir (its cache/ folder)",
                             str(cfg.cache_dir), "cache"))
    for i, entry in enumerate(cfg.stages):
        if entry.kind == "compare":  # each task reads its own cache; a checkpoint encoder its file
            out += [InputPath(f"stages[{i}].compare.tasks[{j}].cache", t.cache, "cache")
                    for j, t in enumerate(entry.body.tasks)]
            out += [InputPath(f"stages[{i}].compare.encoders[{j}].checkpoint", e.checkpoint, "file")
                    for j, e in enumerate(entry.body.encoders) if e.checkpoint]
        speech = getattr(entry.body, "speech", None)
        if speech is not None and speech.encoder in ("wav2vec2", "hubert") and speech.pretrained_path:
            out.append(InputPath(f"stages[{i}].pretrain.speech.pretrained_path", speech.pretrained_path,
                                 "model folder"))
    return out


def check_inputs(cfg, source: str | Path) -> list[Path]:
    """Resolve and check every input path (:func:`input_paths`); returns them resolved.

    Raises:
        ConfigError: one line per path that is missing or of the wrong kind, naming its key, the
            absolute path looked for and the working directory it was resolved from.
    """
    problems, found = [], []
    for item in input_paths(cfg):
        path = absolute(item.value)
        problem = _input_problem(item, path, Path(source))
        if problem:
            problems.append(f"{source}: {item.key}: {problem}")
        else:
            found.append(path)
    if problems:
        raise ConfigError("\n".join(problems))
    return found


def _input_problem(item: InputPath, path: Path, source: Path) -> str | None:
    if item.value == REDACTED:
        return (f"{REDACTED!r} is a placeholder from a logged config (MLflow never stores paths); put the real "
                "path back")
    if not path.exists():
        beside = Path(os.path.abspath(source.parent / item.value))
        hint = TILDE if item.value.startswith("~") else ""
        if not Path(item.value).is_absolute() and not hint:
            hint = (f"; a relative path is read from the working directory {Path.cwd()}, not from the YAML's "
                    "folder")
            if beside.exists():
                hint += (f" (it does exist there: {beside}; give that absolute path or run usssl from "
                         f"{source.parent.resolve()})")
        need = "; without an ingest stage the pipeline reads an existing cache" if item.kind == "cache" else ""
        return f"{item.value} not found (looked for {path}){hint}{need}"
    if item.kind == "file" and not path.is_file():
        return f"{path} is a folder; give the CSV file"
    if item.kind == "cache" and not path.is_dir():
        return f"{path} is a file; give the folder `usssl ingest` wrote"
    if item.kind == "model folder":
        if not path.is_dir():
            return f"{path} is a file; give the folder written by save_pretrained (it holds config.json)"
        if not (path / "config.json").is_file():
            return f"{path} has no config.json; give the folder written by save_pretrained"
    if item.kind == "source" and path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
        return f"{path} is an empty folder; nothing to ingest"
    if not os.access(path, os.R_OK):
        return f"{path} cannot be read (permission denied)"
    return None


def check_paths(cfg, source: str | Path) -> str:
    """:func:`check_inputs` then :func:`check_outputs`; returns what was checked, in words."""
    inputs = check_inputs(cfg, source)
    check_outputs(cfg, source)
    return f"{len(inputs)} input path(s) (relative ones from {Path.cwd()}), output folders"


def output_folders(cfg) -> list[tuple[str, str]]:
    """(key, folder as written) of every folder the pipeline writes to: ``output_dir``, ``data.cache_dir``
    when an ingest stage writes it, and the folder of an sqlite tracking store outside ``output_dir``."""
    folders = [("output_dir", cfg.output_dir)]
    if cfg.data.cache_dir and any(e.kind == "ingest" for e in cfg.stages):
        folders.append(("data.cache_dir", cfg.data.cache_dir))
    uri = cfg.tracking_uri
    if cfg.tracking.enabled and uri.startswith("sqlite:///"):
        db = absolute(uri[len("sqlite:///"):])
        if absolute(cfg.output_dir) not in db.parents:
            key = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "tracking.uri"
            folders.append((key, str(db.parent)))
    return folders


def check_outputs(cfg, source: str | Path) -> None:
    """:func:`check_output_dir` for every folder of :func:`output_folders` (nothing is left behind)."""
    for key, folder in output_folders(cfg):
        check_output_dir(folder, key, source)


def check_output_dir(folder: str | Path, key: str, source: str | Path | None = None) -> Path:
    """Check that ``folder`` can be created (or exists) and written, on a disk with room; returns it
    absolute. A write test creates and removes one empty folder; nothing else is created.

    Raises:
        ConfigError: ``[source: ]key: <why>; <what to do>`` for a pseudo-filesystem (/proc, /sys), a
            file in the way, no write permission or a read-only disk, or less than MIN_FREE_BYTES free.
    """
    prefix = f"{source}: {key}" if source else key
    if str(folder).startswith("~"):
        raise ConfigError(f"{prefix}: {folder}{TILDE}")
    path = absolute(folder)
    for pseudo in PSEUDO_FILESYSTEMS:
        if path == Path(pseudo) or Path(pseudo) in path.parents:
            raise ConfigError(f"{prefix}: {path} is inside {pseudo}, the kernel's pseudo-filesystem, where nothing "
                              "can be written; choose a folder on a disk, e.g. runs/my_study")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{prefix}: {path} exists and is a file, not a folder; choose another name")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{prefix}: {existing} is a file, so the folder {path} cannot be created; choose "
                          "another name")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".usssl-write-test-", dir=existing))
    except OSError as exc:
        why = exc.strerror or str(exc)
        so = "" if existing == path else f", so {path} cannot be created"
        raise ConfigError(f"{prefix}: cannot write in {existing} ({why}){so}; choose a folder you can write to, "
                          "or ask for write access") from None
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise ConfigError(f"{prefix}: only {free / 2**20:.0f} MB free on the disk that holds {path}; free some "
                          f"space (df -h {existing}) or choose a folder on another disk")
    return path


def os_error_message(exc: BaseException, folder: str | Path | None = None, then: str = "") -> str | None:
    """One line for a disk-full or not-writable error anywhere in ``exc``'s chain (None for others).

    ``folder`` is named when the error carries no file name; ``then`` is appended (how to resume).
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        number = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
        where = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
        where = absolute(where) if where else (absolute(folder) if folder else None)
        place = f" while writing {where}" if where else ""
        if number in DISK_FULL or any(t in text for t in DISK_FULL_TEXT):
            disk = where.parent if where and not where.is_dir() else where
            return (f"disk full{place}; free space on that disk" + (f" (df -h {disk})" if disk else "") +
                    " or point output_dir (and data.cache_dir) at a disk with room" + then)
        if number in NOT_WRITABLE:
            on = f": {where}" if where else ""
            return (f"{exc.strerror or 'not permitted'}{on}; check that you may read and write there, or choose "
                    "another folder" + then)
        exc = exc.__cause__ or exc.__context__
    return None
