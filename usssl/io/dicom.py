"""DICOM ultrasound (single- and multi-frame) through pydicom 3: frames, timing, imaging region.

Frames are decoded lazily, one at a time, by :func:`pydicom.pixels.iter_pixels` on the file
path, so a long cine never sits in memory whole. Output is uint8:

- MONOCHROME2 as stored when unsigned 8-bit (no window); MONOCHROME1 inverted (white is always
  "more echo");
- more than 8 bits (or signed): the Modality LUT (rescale) is applied, then the first Window
  Center/Width of the header (PS3.3 C.11.2.1.2 linear window) when present, else a min-max scaling
  fixed from the **first frame** (so every frame of a recording gets the same mapping);
- colour: luma (t, H, W) by default, as ``read_video``; with ``grayscale=False`` (t, H, W, 3)
  RGB: YBR_FULL / YBR_FULL_422 are decoded as stored and converted by OpenCV (within 1 level of
  pydicom's own conversion, several times faster), YBR_ICT / YBR_RCT by the JPEG 2000 decoder,
  PALETTE COLOR through its lookup tables (16-bit entries are shifted to 8 bits).

Frame rate, in this order (``meta["fps_source"]`` says which was used): Frame Time (0018,1063,
ms per frame) → Frame Time Vector (0018,1065, mean of the increments after the first, which the
standard defines as 0) → Cine Rate (0018,0040) → Recommended Display Frame Rate (0008,2144) → 30
fps with a logged warning (an encapsulated video's own stream rate comes before that fallback).
Timestamps come from the Frame Time Vector when it has one entry per frame, else from the rate.
A stated rate outside ``usssl.io.video.MIN_FPS``-``MAX_FPS`` (Frame Time 1e7 ms) is ignored and the
next one used; a Frame Time Vector pause longer than ``MAX_FRAME_GAP_S`` is shortened to it.

Number of Frames is checked against the data (:func:`pixel_frames`): native Pixel Data holds its
length over one frame's size, encapsulated data its offset table's entries (at most one frame per
fragment), a video its stream's packets. Where the header disagrees (2e8 frames in a 124 KB file,
3 or 0 with data for 8), the data's count is read. Every such repair is a sentence in
``meta["notes"]``, which ingest writes to the report.

Sequence of Ultrasound Regions (0018,6011) → ``meta["region_box"]``: the largest 2-D region
(Region Spatial Format 1), end-exclusive (x0, y0, x1, y1), clamped to the image; ``spacing_mm``
(row, column) from its Physical Delta Y/X only when both physical units are 3 (cm).

Encapsulated video (MPEG-2, H.264, HEVC transfer syntaxes) is decoded through PyAV
(``usssl.io.dicom_video``): frame count and rate from the header where it states them, else from
the stream.

A file is DICOM when its name ends in ``.dcm`` / ``.dicom`` or, whatever its name (PACS exports
often have none: ``IM0001``), when it carries the ``DICM`` magic at byte 128
(:func:`is_dicom_file`).

Patient identifiers never enter the Recording: ``meta`` holds technical fields only. The subject
id for pseudonymisation comes separately from :func:`dicom_subject_id`.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments, parse_basic_offsets
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from usssl.errors import DataError
from usssl.io.dicom_frames import DicomFrames
from usssl.io.dicom_video import DicomVideoFrames, is_video_syntax, probe_video
from usssl.io.recording import Recording
from usssl.io.video import MAX_FPS, MAX_FRAME_GAP_S, MIN_FPS, gap_note, plausible_fps, relative_source, shortened_gaps

log = logging.getLogger(__name__)

DICOM_EXTENSIONS = (".dcm", ".dicom")
FALLBACK_FPS = 30.0
Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), end-exclusive
UNSUPPORTED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6.2": "3-D volumes are not cine loops",  # Enhanced US Volume Storage
    "1.2.840.10008.5.1.4.1.1.6.3": "photoacoustic volumes are not cine loops",  # Photoacoustic Image
}
DICOM_MAGIC, DICOM_MAGIC_OFFSET = b"DICM", 128  # PS3.10 7.1: after the 128-byte preamble
_HEADER_DEFER = "64 KB"  # large values (the pixel data) are skipped when the header is read


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` is a regular file with the DICOM ``DICM`` magic at byte 128 (any name)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(DICOM_MAGIC_OFFSET)
            return handle.read(len(DICOM_MAGIC)) == DICOM_MAGIC
    except OSError:
        return False


def read_header(path: Path) -> Dataset:
    """The dataset without loading large values (pixel data stays on disk).

    Raises:
        DataError: the file is not DICOM.
    """
    try:
        try:
            return pydicom.dcmread(path, defer_size=_HEADER_DEFER)
        except InvalidDicomError:  # no 128-byte preamble: old files still parse with force
            ds = pydicom.dcmread(path, defer_size=_HEADER_DEFER, force=True)
            if "SOPClassUID" not in ds and "PixelData" not in ds:
                raise InvalidDicomError("neither a SOP class nor pixel data") from None
            return ds
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: not a readable DICOM file ({exc}); check that the file is complete "
            "or remove it from the sources"
        ) from None


def dicom_subject_id(path: str | Path) -> str | None:
    """PatientID (0010,0020), else StudyInstanceUID, of a DICOM file; None when neither is set.

    For pseudonymisation only: hash it (``usssl.privacy.pseudonym``), never store or log it.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["PatientID", "StudyInstanceUID"])  # fmt: skip
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
        return None
    for keyword in ("PatientID", "StudyInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            return value
    return None


def frame_timing(ds: Dataset, n_frames: int, stream_rate: float | None = None,
                 notes: list[str] | None = None) -> tuple[float, np.ndarray | None, str]:  # fmt: skip
    """(fps, timestamps (n_frames,) float64 seconds or None, the attribute the rate came from).

    ``stream_rate`` (an encapsulated video's own rate) comes after the header's attributes and
    before the 30 fps fallback. A rate outside [``MIN_FPS``, ``MAX_FPS``] (e.g. FrameTime 1e7 ms)
    is skipped and the next attribute is used; Frame Time Vector pauses longer than
    ``MAX_FRAME_GAP_S`` are shortened to it. Each such repair appends a sentence to ``notes``.
    """
    notes = notes if notes is not None else []
    vector = None
    if "FrameTimeVector" in ds and ds.FrameTimeVector is not None:
        values = np.atleast_1d(np.asarray(ds.FrameTimeVector, dtype=np.float64))  # ms
        if len(values) == n_frames and n_frames > 1 and np.all(values[1:] > 0):
            vector = values[1:]  # the first entry is the (zero) time of the first frame
    timestamps = None
    if vector is not None:
        jumps = shortened_gaps(np.concatenate([[0.0], np.cumsum(vector)]) / 1000.0)[1]
        notes.extend([gap_note(jumps, n_frames).replace("timestamps", "FrameTimeVector")] if jumps else [])
        vector = np.minimum(vector, MAX_FRAME_GAP_S * 1000.0)  # pauses past the limit shortened to it
        timestamps = np.concatenate([[0.0], np.cumsum(vector)]) / 1000.0
    frame_time = _positive(ds.get("FrameTime"))
    if frame_time is not None and _believed(1000.0 / frame_time, f"FrameTime {frame_time:g} ms", notes):
        return 1000.0 / frame_time, timestamps, "FrameTime"
    if vector is not None:
        return 1000.0 / float(vector.mean()), timestamps, "FrameTimeVector"
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _positive(ds.get(keyword))
        if rate is not None and _believed(rate, f"{keyword} {rate:g}", notes):
            return rate, None, keyword
    if stream_rate is not None and _believed(stream_rate, f"the video stream's rate {stream_rate:g}", notes):
        return stream_rate, None, "video stream"
    if n_frames > 1:
        log.warning("a DICOM cine states no frame timing: assuming %.0f fps", FALLBACK_FPS)
    return FALLBACK_FPS, None, "fallback"


def _believed(fps: float, what: str, notes: list[str]) -> bool:
    """Whether a stated rate is plausible; if not, a note says it was ignored."""
    if plausible_fps(fps):
        return True
    notes.append(f"{what} means {fps:.3g} fps, outside the {MIN_FPS:g}-{MAX_FPS:g} fps usssl believes: ignored")
    return False


def pixel_frames(ds: Dataset, syntax: UID) -> tuple[int | None, bool]:
    """(frames the Pixel Data can hold, whether that is exact), read from the header alone.

    Native data: its length over one frame's size (exact). Encapsulated: the Extended or Basic
    Offset Table's entries (exact), else the number of fragments (at most that many frames: a
    fragment never holds two). (None, False) when the header does not tell.
    """
    element = ds.get_item("PixelData")
    if element is None:
        return None, False
    value = element.value  # bytes, or None while deferred (native data left on disk)
    length = getattr(element, "length", None)  # a RawDataElement's; a DataElement's is its value's
    if length is None and isinstance(value, (bytes, bytearray)):
        length = len(value)
    if syntax.is_encapsulated:
        if "ExtendedOffsetTable" in ds:
            return len(ds.ExtendedOffsetTable) // 8, True
        if not isinstance(value, (bytes, bytearray)) or not value:
            return None, False
        try:
            buffer = io.BytesIO(value)
            offsets = parse_basic_offsets(buffer)
            return (len(offsets), True) if offsets else (sum(1 for _ in generate_fragments(buffer)), False)
        except (ValueError, TypeError, EOFError, OSError):
            return None, False
    samples = 2 if ds.get("PhotometricInterpretation") == "YBR_FULL_422" else int(ds.get("SamplesPerPixel") or 1)
    frame_bits = int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * samples * int(ds.get("BitsAllocated") or 8)
    if frame_bits <= 0 or length in (None, 0xFFFFFFFF):
        return None, False
    return int(length) * 8 // frame_bits, True


def frame_count(path: Path, stated, counted: int | None, exact: bool, notes: list[str]) -> int:
    """The number of frames to read: the data's count where it differs from ``stated`` (the header's
    Number of Frames), with a note. Memory then follows the file, whatever the header says.

    Raises:
        DataError: the data holds no whole frame.
    """
    try:
        stated = int(stated) if stated not in (None, "") else None
    except (TypeError, ValueError):
        stated = None
    if counted is None:
        return stated or 1
    said = f"NumberOfFrames says {stated}" if stated else "NumberOfFrames is missing or 0"
    if counted == 0:
        raise DataError(f"{path}: the pixel data holds not even one frame of the stated Rows x Columns; "
                        "the file is truncated or its header is wrong: export it again")  # fmt: skip
    if exact and counted != (stated or 1):
        notes.append(f"{said} but the pixel data holds {counted} frame(s): read {counted}")
        return counted
    if not exact and (stated or 1) > counted:
        notes.append(f"{said} but the pixel data has {counted} fragment(s), so at most {counted} frame(s): "
                     f"read {counted}")  # fmt: skip
        return counted
    return stated or 1


def _stated_frames(ds: Dataset) -> int | None:
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return None


def _positive(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def ultrasound_region(ds: Dataset, height: int,
                      width: int) -> tuple[Box | None, tuple[float, float] | None]:  # fmt: skip
    """(box, spacing_mm) of the largest 2-D ultrasound region, or (None, None) without one.

    The box is (x0, y0, x1, y1), end-exclusive (DICOM's Max corners are inclusive), clamped to the
    (height, width) image; spacing_mm is (row, column) in mm, only for cm units (code 3).
    """
    best, best_area = None, 0
    for region in ds.get("SequenceOfUltrasoundRegions") or []:
        if region.get("RegionSpatialFormat") != 1:  # 1 = 2-D tissue or colour flow image
            continue
        try:
            x0, y0 = int(region.RegionLocationMinX0), int(region.RegionLocationMinY0)
            x1, y1 = int(region.RegionLocationMaxX1) + 1, int(region.RegionLocationMaxY1) + 1
        except (AttributeError, TypeError, ValueError):
            continue
        box = (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))
        area = (box[2] - box[0]) * (box[3] - box[1])
        if box[2] > box[0] and box[3] > box[1] and area > best_area:
            overhang = max(-x0, -y0, x1 - width, y1 - height, 0)
            best, best_area = (region, box, overhang), area
    if best is None:
        return None, None
    region, box, overhang = best
    if overhang > 2:  # vendors often state an inclusive max one pixel past the image: no warning
        log.warning("an ultrasound region reaches outside its image: clamped to the image")
    spacing = None
    units = (region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection"))
    dx, dy = _positive(abs(float(region.get("PhysicalDeltaX") or 0))), _positive(
        abs(float(region.get("PhysicalDeltaY") or 0)))  # fmt: skip
    if units == (3, 3) and dx is not None and dy is not None:
        spacing = (dy * 10.0, dx * 10.0)  # cm -> mm, (row, column)
    return box, spacing


def check_supported(ds: Dataset, path: Path) -> UID:
    """The transfer syntax to decode, or DataError saying why this file cannot be read."""
    sop = UID(str(ds.get("SOPClassUID", "") or ""))
    sop_name = f"{sop.name} ({sop})" if sop else "no SOP class"
    if sop in UNSUPPORTED_SOP_CLASSES:
        why = UNSUPPORTED_SOP_CLASSES[sop]
        raise DataError(f"{path}: SOP class {sop_name} is not supported ({why}); remove it from the "
                        "sources")  # fmt: skip
    if "PixelData" not in ds:
        floats = "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
        what = "float pixel data" if floats else "no pixel data"
        raise DataError(f"{path}: {what} in this {sop_name} object; remove it from the sources")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None:  # raw dataset without file meta: its encoding is what was parsed
        implicit = ds.original_encoding[0] if ds.original_encoding[0] is not None else True
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    syntax = UID(syntax)
    if is_video_syntax(syntax):  # MPEG-2 / H.264 / HEVC: PyAV decodes it (usssl.io.dicom_video)
        return syntax
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DataError(f"{path}: transfer syntax {syntax.name} ({syntax}) of this {sop_name} object "
                        "cannot be decoded; export it uncompressed, as JPEG or as an mp4") from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies)
        raise DataError(
            f"{path}: no decoder installed for {syntax.name} ({sop_name}); install one of: {needs} "
            "(e.g. pip install 'pylibjpeg>=2.0' 'pylibjpeg-libjpeg>=2.1')"
        )
    palette = ("RedPaletteColorLookupTableData" in ds or "SegmentedRedPaletteColorLookupTableData" in ds)
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR" and not palette:
        raise DataError(f"{path}: PALETTE COLOR image without its colour lookup tables")
    return syntax


def read_dicom(path: str | Path, root: str | Path | None = None, *, grayscale: bool = True,
               audio: bool = True, audio_rate: int | None = None) -> Recording:  # fmt: skip
    """Open a DICOM file and return its lazy :class:`Recording` (module docstring: the rules).

    Args:
        path: the DICOM file.
        root: the ingest root; ``Recording.source`` is ``path`` relative to it.
        grayscale: colour frames as (t, H, W) luma (as ``read_video``) rather than (t, H, W, 3) RGB.
        audio, audio_rate: accepted for the common reader signature; DICOM carries no narration.

    Returns:
        A Recording: uint8 frames (t, H, W), or (t, H, W, 3) RGB for colour without ``grayscale``;
        fps, timestamps, spacing_mm, meta (format, modality, manufacturer, model, sop_class,
        photometric, transfer_syntax, n_frames, bits_stored, burned_in_annotation, fps_source,
        region_box) — no patient data.

    Raises:
        DataError: not DICOM, no pixel data, an unsupported SOP class or transfer syntax, no
            decoder installed for it, or an encapsulated video that cannot be opened; the message
            names the file and what to do.
    """
    path = Path(path)
    ds = read_header(path)
    syntax = check_supported(ds, path)
    video = is_video_syntax(syntax)
    stream = probe_video(path, syntax) if video else None  # (frames, rate, height, width)
    notes: list[str] = []  # header claims the data contradicts, and what was read instead
    try:
        height = int(ds.get("Rows") or (stream[2] if stream else 0))
        width = int(ds.get("Columns") or (stream[3] if stream else 0))
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{path}: Rows or Columns missing or invalid") from None
    if height < 1 or width < 1:
        raise DataError(f"{path}: empty image ({height} x {width} pixels)")
    counted, exact = (stream[0], True) if stream else pixel_frames(ds, syntax)
    if stream and "NumberOfFrames" not in ds:
        counted, exact = None, False  # the stream's count is the only one: nothing to compare
    n_frames = frame_count(path, ds.get("NumberOfFrames") or (stream[0] if stream else None), counted, exact, notes)
    fps, timestamps, fps_source = frame_timing(ds, n_frames, stream[1] if stream else None, notes)
    box, spacing = ultrasound_region(ds, height, width)
    burned = str(ds.get("BurnedInAnnotation", "") or "").upper()
    sop = UID(str(ds.get("SOPClassUID", "") or ""))
    meta = {
        "format": "dicom",
        "modality": str(ds.get("Modality", "") or ""),
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "model": str(ds.get("ManufacturerModelName", "") or ""),
        "sop_class": sop.name if sop else "",
        "photometric": str(ds.get("PhotometricInterpretation", "")),
        "transfer_syntax": syntax.name,
        "n_frames": n_frames,
        "bits_stored": int(ds.get("BitsStored", 8) or 8),
        "burned_in_annotation": {"YES": True, "NO": False}.get(burned),
        "fps_source": fps_source,
        "region_box": list(box) if box is not None else None,
        "notes": notes,
    }
    if video:
        frame_source = DicomVideoFrames(path, str(syntax), n_frames, height, width, grayscale)
    else:
        has_meta = "TransferSyntaxUID" in getattr(ds, "file_meta", {})
        frame_source = DicomFrames(path, n_frames, str(syntax), has_meta, grayscale,
                                   override=n_frames != _stated_frames(ds))  # fmt: skip
    return Recording(
        source=relative_source(path, Path(root) if root is not None else None),
        fps=float(fps),
        n_frames=n_frames,
        height=height,
        width=width,
        timestamps=timestamps if timestamps is not None else np.arange(n_frames) / fps,
        spacing_mm=spacing,
        meta=meta,
        frame_source=frame_source,
    )
