"""Atomic file writes: every file usssl writes goes to a temporary name in the same folder and is
renamed over the target, so a killed run never leaves a half-written file.

The temporary name is unique (``.tmp-<12 hex>-<name>``, so it keeps the suffix): machines of a sharded ingest may write the
same file at the same time, and the last rename wins whole.

    >>> write_json_atomic(out / "summary.json", {"n": 3})
    >>> save_atomic({"encoder": model.state_dict()}, out / "encoder.pt")
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable


def replace_atomic(path: str | Path, write: Callable[[Path], Any], mode: int | None = None) -> Path:
    """Call ``write(tmp)`` on a unique temporary path beside ``path``, then rename it over ``path``.

    Args:
        path: the file to (re)place; its folder is created when missing.
        write: writes the whole file to the path it is given.
        mode: permission bits for the file (e.g. ``0o600`` for reports that name inputs), set when
            the temporary file is created, before any byte is written, whatever the umask; None
            keeps the process umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")
    try:
        if mode is not None:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            os.fchmod(fd, mode)  # the umask may have cleared bits of ``mode``
            os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str, mode: int | None = None) -> Path:
    """``path.write_text(text)``, atomically."""
    return replace_atomic(path, lambda tmp: tmp.write_text(text), mode)


def write_json_atomic(path: str | Path, obj: Any, newline: bool = True, **dump_kwargs: Any) -> Path:
    """``obj`` as indented JSON (``json.dumps(obj, indent=2, **dump_kwargs)``, plus a final newline
    unless ``newline=False``), atomically."""
    text = json.dumps(obj, indent=2, **dump_kwargs) + ("\n" if newline else "")
    return write_text_atomic(path, text)


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path``, atomically (checkpoints, fitted models)."""
    import torch

    return replace_atomic(path, lambda tmp: torch.save(obj, tmp))
