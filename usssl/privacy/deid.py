"""DICOM header de-identification: PS3.15 Table E.1-1, the Basic Profile and two of its options.

    >>> report = deidentify_tree("scans/", "shared/", date_shift_days=-31, keep_descriptors=True)
    >>> report.options, report.write_csv("scans.deid-report.csv")  # the CSV is mode 0600

The table (PS3.15 Annex E, Table E.1-1, edition :data:`EDITION`) is data, generated from the
``dicom-anonymizer`` package into :mod:`usssl.privacy.ps315_table` (``tools/make_ps315_table.py``):
every attribute with its Basic Profile action and whether two option columns mark it C.

Actions, resolved per attribute by :func:`resolve_action` for the file's SOP class:

- X remove (a sequence goes whole, items and all); Z zero length (a sequence: no items);
  D a dummy value of the VR ("ANONYMIZED", 0, 19000101, 000000, zero bytes; a UI gets the U
  treatment; a sequence is kept and its items cleaned by these same rules, recursively);
  U a new UID, ``2.25.<HMAC-SHA256(key, uid)>``, the same everywhere through ``uid_map``, so one
  study's files still reference each other, and the same in later runs with the same key.
- Combinations (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) take the strictest action that keeps the object
  valid: X, unless the attribute is Type 1 or 2 in the file's US IOD (:data:`US_IOD_TYPES`: US
  Image, US Multi-frame Image, Enhanced US Volume), then Z for Type 2 and D for Type 1 (Z/D: Z
  unless Type 1). For other SOP classes the combinations resolve as for no requirement.
- C (clean), in the option columns only: with ``date_shift_days`` (Retain Longitudinal Temporal
  Information with Modified Dates) the column's DA/DT attributes are shifted, its TM kept; with
  ``keep_descriptors`` the Clean Descriptors column's attributes are kept (K) as they are: no
  automatic cleaning of free text is attempted, so a person must read them before release.
  Without the option, C is no action: the Basic one applies (descriptors are removed).
- K keep: what an applied option resolves to. ``date_shift_days=0`` keeps the real dates
  (Retain Longitudinal Temporal Information with Full Dates).

Generic rules, applied at every nesting level to what the table does not list:

- private tags (odd groups) are removed (no Retain Safe Private Option);
- curves (50xx) and overlays (60xx, bitmaps that can hold burned-in text) are removed;
- every other UID that is not a well-known DICOM UID (SOP classes, transfer syntaxes, coding
  schemes) is replaced as U;
- dates (DA, DT) are shifted by ``date_shift_days``, times (TM) kept, or, without a shift, both
  emptied; person names (PN) are emptied;
- free text (LT, ST, UT), standard tags of unknown VR (UN) and embedded Retrieve URLs/AE titles
  are removed.

Header de-identification does **not** clean pixels: burned-in text (BurnedInAnnotation YES) stays
in the image. :func:`deidentify_file` therefore refuses such a file when it has no ultrasound
region to crop to, unless ``allow_burned_in=True``; even with a region, text outside the region
stays in the shared pixels until the pixels are cropped (as ingest does). docs/privacy.md lists
what each option keeps.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import UID

from usssl.engine.files import replace_atomic
from usssl.errors import DataError
from usssl.io.dicom import DICOM_EXTENSIONS, dicom_subject_id, ultrasound_region
from usssl.io.video import printable, relative_source
from usssl.privacy.deid_profile import (  # noqa: F401 (the profile's public names, re-exported)
    CLEAN_DESCRIPTORS_C, EDITION, ENHANCED_US_VOLUME, FULL_DATES, KEEP_DESCRIPTORS, KEYWORDS, MODIFIED_DATES_C,
    MODIFIED_DATES_CODE, OPTION_CODES, OPTIONS, PROFILE, PROFILE_CODE, PROFILE_MASKS, RETAIN_DATES, US_IMAGE,
    US_IOD_TYPES, US_MULTIFRAME, applied_options, describe_options, option_attributes, resolve_action)
from usssl.privacy.pseudonym import pseudonym, subject_key

log = logging.getLogger(__name__)

_EXTRA_X = {tag_for_keyword(k) for k in ("RetrieveURI", "RetrieveURL", "RetrieveAETitle")}  # usssl's own
_FREE_TEXT = {"LT", "ST", "UT"}
_DATES = {"DA", "DT"}
_DUMMY = {"DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000D", "DS": "0", "IS": "0",
          "AT": 0, **dict.fromkeys(("FL", "FD", "SL", "SS", "SV", "UL", "US", "UV"), 0)}  # fmt: skip


class RefusedError(DataError):
    """A file de-identification will not share as it is (burned-in text, no region to crop to)."""


def new_uid(old: str, key: bytes) -> str:
    """``2.25.<int>`` from the first 128 bits of HMAC-SHA256(key, "usssl/uid/<old>") (<= 44 chars)."""
    digest = hmac.new(key, f"usssl/uid/{old}".encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _shift(value: str, vr: str, days: int) -> str:
    """A DA or DT value moved by ``days``; "" when it is not a full date."""
    text = str(value).strip()
    try:
        day = dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    moved = (day + dt.timedelta(days=days)).strftime("%Y%m%d")
    return moved if vr == "DA" else moved + text[8:]


def _dummy(vr: str) -> object:
    """Table E.1-1 "D": a non-empty value consistent with the VR (``vr`` as pydicom spells it)."""
    vr = vr.split(" or ")[0]
    if vr in _DUMMY:
        return _DUMMY[vr]
    return b"\0" * 8 if vr.startswith("O") or vr == "UN" else "ANONYMIZED"


class _Cleaner:
    """Walks one dataset (recursively) applying the resolved table actions and the generic rules."""

    def __init__(self, uid_map: dict, key: bytes, days: int | None, patient_id: str | None, *,
                 sop_class: str, keep_descriptors: bool, animal: bool) -> None:  # fmt: skip
        self.uid_map, self.key, self.days, self.patient_id = uid_map, key, days, patient_id
        self.options = {"sop_class": sop_class, "retain_dates": days is not None,
                        "keep_descriptors": keep_descriptors, "animal": animal}  # fmt: skip

    def uid(self, old: str) -> str:
        old = str(old).strip()
        if not old or UID(old).name != old:  # well-known DICOM UID (its name is in PS3.6 Annex A)
            return old
        if old not in self.uid_map:
            self.uid_map[old] = new_uid(old, self.key)
        return self.uid_map[old]

    def dates(self, elem, vr: str) -> None:
        """DA/DT shifted (or emptied without a shift), TM kept with a shift, else emptied."""
        if vr == "TM" or not elem.value:
            elem.value = elem.value if self.days is not None else None
            return
        values = elem.value if elem.VM > 1 else [elem.value]
        new = [_shift(v, vr, self.days) if self.days is not None else "" for v in values]
        elem.value = (new if elem.VM > 1 else new[0]) if any(new) else None

    def uids(self, elem) -> None:
        if elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            new = [self.uid(v) for v in values]
            elem.value = new if elem.VM > 1 else new[0]

    def clean(self, ds: Dataset) -> None:
        for tag in list(ds.keys()):
            group = tag.group
            action = resolve_action(int(tag), **self.options)
            if (tag.is_private or (group & 0xFF00) in (0x5000, 0x6000) or group == 0xFFFE or action == "X"
                    or tag in _EXTRA_X):  # fmt: skip  (FFFE: a stray item delimiter)
                del ds[tag]
                continue
            try:
                elem = ds[tag]
            except (NotImplementedError, ValueError, TypeError, KeyError):  # undecodable: remove
                del ds[tag]
                continue
            vr = elem.VR
            if vr == "SQ" and action != "Z":  # D, U, K or no action: kept, its items cleaned
                for item in elem.value:
                    self.clean(item)
            elif action == "Z":  # PatientID (Z/D): the subject pseudonym when there is one
                elem.value = Sequence([]) if vr == "SQ" else self.patient_id if tag == 0x00100020 else None
            elif vr == "UI":  # U, D or no action
                self.uids(elem)
            elif action == "D":
                elem.value = _dummy(vr)
            elif action == "K":
                continue
            elif action == "C" or vr in _DATES or vr == "TM":
                self.dates(elem, vr)
            elif vr == "PN":
                elem.value = None
            elif vr in _FREE_TEXT or vr == "UN":
                del ds[tag]


def deidentify_dataset(ds: Dataset, uid_map: dict, date_shift_days: int | None, *,
                       key: bytes | None = None, patient_id: str | None = None,
                       keep_descriptors: bool = False) -> Dataset:  # fmt: skip
    """De-identify ``ds`` in place (PS3.15 Table E.1-1, module docstring) and return it.

    Args:
        ds: a dataset read with pydicom (its file meta, if any, is rebuilt).
        uid_map: old UID -> new UID, read and extended; share it across the files of a study.
        date_shift_days: shift every date by this many days (Retain Longitudinal Temporal
            Information option), or None to remove dates and times.
        key: the HMAC key for new UIDs (default: :func:`usssl.privacy.pseudonym.subject_key`).
        patient_id: a pseudonym to store as PatientID (default: empty).
        keep_descriptors: keep the Clean Descriptors Option's attributes unchanged.

    Returns:
        ``ds``, with PatientIdentityRemoved YES and the profile, edition and options recorded.
    """
    key = subject_key() if key is None else key
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    animal = "PatientSpeciesDescription" in ds or "PatientSpeciesCodeSequence" in ds
    _Cleaner(uid_map, key, date_shift_days, patient_id, sop_class=sop_class, keep_descriptors=keep_descriptors,
             animal=animal).clean(ds)  # fmt: skip
    options = applied_options(date_shift_days, keep_descriptors)
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = (
        "REMOVED" if date_shift_days is None else "UNMODIFIED" if date_shift_days == 0 else "MODIFIED")  # fmt: skip
    ds.DeidentificationMethod = [  # LO, each value at most 64 characters
        f"usssl {version('usssl')}", f"PS3.15 {EDITION} Table E.1-1 Basic Profile", "private tags removed",
        "UIDs replaced", *options,
    ]  # fmt: skip
    codes = [OPTION_CODES["basic"]] + [OPTION_CODES[n] for n in options if n in OPTION_CODES]
    ds.DeidentificationMethodCodeSequence = Sequence([_code(*c) for c in codes])
    if meta is not None and "SOPInstanceUID" in ds:
        new_meta = FileMetaDataset()
        new_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", meta.get("MediaStorageSOPClassUID"))
        new_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "TransferSyntaxUID" in meta:
            new_meta.TransferSyntaxUID = meta.TransferSyntaxUID
        ds.file_meta = new_meta  # drops the source AE title and implementation of the sender
    if hasattr(ds, "preamble"):
        ds.preamble = b"\0" * 128  # a preamble can hold another file format (e.g. TIFF) with PHI
    return ds


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def deidentify_file(src: str | Path, dst: str | Path, *, uid_map: dict | None = None,
                    date_shift_days: int | None = None, key: bytes | None = None,
                    patient_id: str | None = None, allow_burned_in: bool = False,
                    keep_descriptors: bool = False) -> Path:  # fmt: skip
    """Read ``src``, de-identify it (:func:`deidentify_dataset`) and write ``dst`` atomically.

    Raises:
        DataError: ``src`` is not DICOM.
        RefusedError: BurnedInAnnotation is YES, there is no ultrasound region and
            ``allow_burned_in`` is False (its pixels may show the patient's name).
    """
    src, dst = Path(src), Path(dst)
    try:
        ds = pydicom.dcmread(src)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{src}: not a readable DICOM file ({exc})") from None
    burned = str(ds.get("BurnedInAnnotation", "") or "").upper() == "YES"
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if burned and not allow_burned_in and ultrasound_region(ds, rows, cols)[0] is None:
        raise RefusedError(
            f"{src}: refused: BurnedInAnnotation is YES and there is no ultrasound region, so the "
            "pixels may show patient data that header de-identification does not remove; check "
            "the images, then allow burned-in annotation explicitly to share them anyway"
        )
    deidentify_dataset(ds, {} if uid_map is None else uid_map, date_shift_days, key=key,
                       patient_id=patient_id, keep_descriptors=keep_descriptors)  # fmt: skip
    _even_fragments(ds)
    return replace_atomic(dst, lambda tmp: ds.save_as(tmp, enforce_file_format=True))


def _even_fragments(ds: Dataset) -> None:
    """Re-encapsulate compressed pixel data whose fragments have odd lengths (seen in real files):
    writing would pad the value's end and break its item structure; PS3.5 A.4 pads each fragment."""
    elem = ds["PixelData"] if "PixelData" in ds else None
    if elem is None or not elem.is_undefined_length or len(elem.value) % 2 == 0:
        return
    frames = list(generate_frames(elem.value, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    elem.value = encapsulate(frames)


REPORT_FIELDS = ("source", "output", "status", "reason")


@dataclass
class DeidReport:
    """One row per input file: ``source`` (relative to the source root; keep the report with the
    source data, never with the shared copy), ``output`` (relative to the output root), ``status``
    (ok / refused / failed) and ``reason``; ``options``: the names of the applied options
    (:func:`applied_options`) and ``summary``: :func:`describe_options`' line."""

    rows: list[dict] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    summary: str = ""

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    def write_csv(self, path: str | Path) -> Path:
        """Write the rows as CSV to ``path`` atomically, readable by its owner only (mode 0600):
        the report maps source paths, which may hold patient names, to the pseudonymous outputs."""
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=REPORT_FIELDS)
                writer.writeheader()
                writer.writerows(self.rows)

        return replace_atomic(path, write, mode=0o600)


def deidentify_tree(src_root: str | Path, dst_root: str | Path, *, date_shift_days: int | None = None,
                    allow_burned_in: bool = False, key: bytes | None = None,
                    keep_descriptors: bool = False) -> DeidReport:  # fmt: skip
    """De-identify every ``*.dcm`` / ``*.dicom`` under ``src_root`` into ``dst_root``.

    Outputs are ``dst_root/<subject>/<file>.dcm`` with both names keyed hashes (the subject from
    PatientID, else StudyInstanceUID, as in ingest; never the original name). One UID map is
    shared by all files, so references between them survive. A file that fails or is refused is
    reported and the others go on. The report is returned (:meth:`DeidReport.write_csv` writes
    it), not written into ``dst_root``.
    """
    src_root, dst_root = Path(src_root), Path(dst_root)
    key = subject_key() if key is None else key
    uid_map: dict[str, str] = {}
    report = DeidReport(options=applied_options(date_shift_days, keep_descriptors),
                        summary=describe_options(date_shift_days, keep_descriptors))  # fmt: skip
    skip = dst_root.resolve()
    files = [p for p in sorted(src_root.rglob("*")) if p.suffix.lower() in DICOM_EXTENSIONS and p.is_file()
             and not p.name.startswith(".") and skip not in p.resolve().parents]  # fmt: skip
    for path in files:
        source = printable(relative_source(path, src_root))  # non-UTF-8 file names as \xNN
        subject = pseudonym(dicom_subject_id(path) or source, key, kind="subject")
        out = dst_root / subject / f"{pseudonym(source, key, kind='dicom')}.dcm"
        row = {"source": source, "output": out.relative_to(dst_root).as_posix(), "status": "ok",
               "reason": ""}  # fmt: skip
        try:
            deidentify_file(path, out, uid_map=uid_map, date_shift_days=date_shift_days, key=key,
                            patient_id=subject, allow_burned_in=allow_burned_in,
                            keep_descriptors=keep_descriptors)  # fmt: skip
        except DataError as exc:
            row.update(status="refused" if isinstance(exc, RefusedError) else "failed", output="",
                       reason=str(exc).replace(str(path), source))  # fmt: skip
        except Exception as exc:  # bad input is data: reported, the others go on
            reason = f"{type(exc).__name__}: {exc}".replace(str(path), source)
            row.update(status="failed", output="", reason=reason)
        report.rows.append(row)
    log.info("de-identified %d of %d DICOM file(s) (%d refused, %d failed); %s", report.count("ok"),
             len(files), report.count("refused"), report.count("failed"), report.summary)  # fmt: skip
    return report
