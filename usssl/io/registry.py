"""The reader registry: which reader opens which file.

``READERS`` maps a file-name ending to a reader ``reader(path, root, *, audio, audio_rate) ->
Recording``; endings are matched on the end of the name, longest first, so two-part extensions
(``.nii.gz``) work. A DICOM without an extension (PACS exports) is recognised by its DICM magic.
Standalone WAV/FLAC files are narration beside a video, not recordings. Still images (PNG, JPEG, BMP,
TIFF) are one-frame recordings (``usssl.io.image``); a mask image beside one (``usssl.io.masks``) is
not. A new reader is one file in ``usssl/io/`` plus its extensions here.

    >>> reader_for(Path("scan.nii.gz"))
    ('nifti', <function read_nifti ...>)
    >>> recording_stem(Path("scan.nii.gz"))
    'scan'
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from usssl.io.dicom import DICOM_EXTENSIONS, is_dicom_file, read_dicom
from usssl.io.image import IMAGE_EXTENSIONS, read_image
from usssl.io.nifti import NIFTI_EXTENSIONS, read_nifti
from usssl.io.recording import Recording
from usssl.io.video import VIDEO_EXTENSIONS, read_video

READERS: dict[str, Callable[..., Recording]] = {ext: read_video for ext in VIDEO_EXTENSIONS}
READERS |= {ext: read_dicom for ext in DICOM_EXTENSIONS}
READERS |= {ext: read_nifti for ext in NIFTI_EXTENSIONS}
READERS |= {ext: read_image for ext in IMAGE_EXTENSIONS}


def reader_for(path: Path) -> tuple[str, Callable[..., Recording]] | None:
    """(format name, reader) of ``path``: by its extension, else ``dicom`` when the file carries
    the DICM magic (PACS exports often have no extension); None for any other file."""
    ext = media_extension(path)
    if ext is not None:
        name = ("dicom" if ext in DICOM_EXTENSIONS else "nifti" if ext in NIFTI_EXTENSIONS else
                "image" if ext in IMAGE_EXTENSIONS else ext.lstrip("."))  # fmt: skip
        return name, READERS[ext]
    if is_dicom_file(path):
        return "dicom", read_dicom
    return None


def media_extension(path: Path, extensions=None) -> str | None:
    """The extension of ``path`` among ``extensions`` (default: ``READERS``), longest match first."""
    name = Path(path).name.lower()
    for ext in sorted(READERS if extensions is None else extensions, key=len, reverse=True):
        if name.endswith(ext) and len(name) > len(ext):
            return ext
    return None


def recording_stem(path: Path) -> str:
    """The file name without its reader extension (``scan.nii.gz`` -> ``scan``; an extension-less
    DICOM keeps its whole name, ``IM0001``): the key of the label, gaze and subject tables and of
    a narration side file."""
    ext = media_extension(path)
    if ext:
        return Path(path).name[: -len(ext)]
    return Path(path).name if is_dicom_file(path) else Path(path).stem
