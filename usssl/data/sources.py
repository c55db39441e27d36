"""Finding the recordings under the ingest sources (folders searched recursively, or files).

    >>> find_recordings([Path("scans")])
    [(PosixPath('scans/a/scan_000.mp4'), PosixPath('scans')), ...]
"""

from __future__ import annotations

from pathlib import Path

from usssl.errors import DataError
from usssl.io.audio import AUDIO_EXTENSIONS
from usssl.io.masks import is_mask_image
from usssl.io.registry import media_extension, reader_for

NOT_RECORDINGS = {"dicomdir"}  # a PACS export's index file: DICOM magic, no images


def _is_recording(path: Path, extensions) -> bool:
    """A file ingest reads: a known extension, or (``extensions`` None) no media extension at all
    and the DICOM magic; a DICOMDIR index is not a recording, nor is the mask image of an image
    beside it (``<stem>_mask.png``, ``<stem>_Annotation.png``: ``usssl.io.masks``)."""
    if extensions is not None:
        return media_extension(path, extensions) is not None and not is_mask_image(path)
    if path.name.lower() in NOT_RECORDINGS or media_extension(path, AUDIO_EXTENSIONS) is not None:
        return False
    if is_mask_image(path):
        return False
    return reader_for(path) is not None


def find_recordings(sources: list[Path], extensions=None) -> list[tuple[Path, Path]]:
    """(file, root) for each supported file: a file is its own root's child, a folder is searched
    recursively. A file without a media extension is a DICOM when it carries the ``DICM`` magic
    (PACS exports: ``IM0001``); other such files are ignored quietly, as are hidden files and a
    DICOMDIR. Duplicates are kept once. In a synthetic corpus (a folder with ``corpus.json``) only
    ``videos/`` is read: ``dicom/`` holds the same scans again.
    ``extensions`` (default ``READERS``) selects the files, e.g. ``AUDIO_EXTENSIONS``."""
    found: dict[Path, tuple[Path, Path]] = {}
    for src in map(Path, sources):
        if src.is_file():
            if _is_recording(src, extensions):
                found.setdefault(src.resolve(), (src, src.parent))
        elif src.is_dir():
            corpora = [c.parent for c in src.rglob("corpus.json")]
            for path in sorted(src.rglob("*")):
                if any(c in path.parents and c / "videos" not in path.parents for c in corpora):
                    continue
                if not path.name.startswith(".") and path.is_file() and _is_recording(path, extensions):
                    found.setdefault(path.resolve(), (path, src))
        else:
            raise DataError(f"{src}: source not found; give existing files or folders")
    return list(found.values())
