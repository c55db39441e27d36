"""DICOM header de-identification: PS3.15 Basic Application Level Confidentiality Profile.

The profile is PS3.15 Annex E, Table E.1-1 ("Application Level Confidentiality Profile
Attributes"). :data:`PROFILE` holds, as a table, the Basic Profile action (X remove, Z empty) of
the Table E.1-1 attributes that occur in ultrasound objects; where the table allows a choice
(X/Z, X/Z/D, Z/D) the stricter X is taken, or Z where the attribute is Type 2 in the US IODs.
Generic rules, applied at every nesting level, cover what a fixed list cannot:

- private tags (odd groups) are removed (Basic Profile: no Retain Safe Private Option);
- curves (50xx) and overlays (60xx, bitmaps that can hold burned-in text) are removed;
- every UID that is not a well-known DICOM UID (SOP classes, transfer syntaxes, coding schemes…)
  is replaced by ``2.25.<HMAC-SHA256(key, uid)>`` — Table E.1-1 "U" — consistently through
  ``uid_map``, so one study's files still reference each other;
- dates (DA, DT) are shifted by ``date_shift_days`` (Retain Longitudinal Temporal Information
  with Modified Dates Option, times of day kept) or, without a shift, emptied with the times (TM);
- person names (PN) anywhere are emptied;
- free text (LT, ST, UT), standard tags of unknown VR (UN) and encapsulated documents are removed
  (stricter than the profile's "C" clean action, which needs a human to read the text).

Header de-identification does **not** clean pixels: burned-in text (BurnedInAnnotation YES) stays
in the image. :func:`deidentify_file` therefore refuses such a file when it has no ultrasound
region to crop to, unless ``allow_burned_in=True``; even with a region, text outside the region
stays in the shared pixels until the pixels are cropped (as ingest does).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import UID

from usssl.errors import DataError
from usssl.io.dicom import DICOM_EXTENSIONS, dicom_subject_id, ultrasound_region
from usssl.io.video import relative_source
from usssl.privacy.pseudonym import pseudonym, subject_key

log = logging.getLogger(__name__)

_X = (  # PS3.15 Table E.1-1: remove
    # patient
    "IssuerOfPatientID", "PatientBirthTime", "PatientAge", "PatientSize", "PatientWeight",
    "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName", "OtherPatientIDs",
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName", "MilitaryRank",
    "BranchOfService", "MedicalRecordLocator", "EthnicGroup", "Occupation", "AdditionalPatientHistory",
    "PatientComments", "PatientReligiousPreference", "RegionOfResidence", "CountryOfResidence",
    "PatientState", "PregnancyStatus", "SmokingStatus", "LastMenstrualDate", "MedicalAlerts",
    "Allergies", "SpecialNeeds", "PatientInsurancePlanCodeSequence", "ResponsiblePerson",
    "ResponsibleOrganization", "PatientSexNeutered", "ReferencedPatientSequence",
    "ReferencedPatientPhotoSequence", "PatientTransportArrangements", "AdmissionID",
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "CurrentPatientLocation",
    "PatientInstitutionResidence", "ServiceEpisodeID", "ServiceEpisodeDescription",
    "PatientPrimaryLanguageCodeSequence", "ReferencedPatientAliasSequence",
    # institution, staff, device
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianName", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "RequestingPhysician", "RequestingService",
    "OperatorsName", "OperatorIdentificationSequence", "ScheduledPerformingPhysicianName",
    "StationName", "DeviceSerialNumber", "DetectorID", "GantryID", "PlateID", "SoftwareVersions",
    "ScheduledStationName", "ScheduledStationAETitle", "PerformedStationName",
    "PerformedStationAETitle", "PerformedLocation", "ScheduledProcedureStepLocation",
    "OrderEnteredBy", "OrderEntererLocation", "OrderCallbackPhoneNumber", "VerifyingOrganization",
    # study, request, descriptions
    "StudyDescription", "SeriesDescription", "StudyComments", "ReasonForStudy",
    "RequestedProcedureDescription", "RequestedProcedureID", "RequestAttributesSequence",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription", "ScheduledProcedureStepID",
    "ScheduledProcedureStepDescription", "ProtocolName", "ImageComments", "FrameComments",
    "DerivationDescription", "AcquisitionComments", "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest", "ReferencedStudySequence",
    "ReferencedPerformedProcedureStepSequence", "ReferencedImageSequence", "SourceImageSequence",
    # whole objects that may carry any of the above
    "IconImageSequence", "OriginalAttributesSequence", "ModifiedAttributesSequence",
    "DigitalSignaturesSequence",
    # usssl additions (not in Table E.1-1): where the file came from, embedded documents
    "RetrieveURI", "RetrieveURL", "RetrieveAETitle", "EncapsulatedDocument",
)  # fmt: skip
_Z = (  # PS3.15 Table E.1-1: replace with a zero-length value (Type 2 in the US IODs)
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName",
    "AccessionNumber", "StudyID", "ContentCreatorName", "VerifyingObserverName",
)  # fmt: skip
PROFILE: dict[int, str] = {tag_for_keyword(k): "X" for k in _X} | {tag_for_keyword(k): "Z" for k in _Z}
"""Tag -> Basic Profile action ("X" remove, "Z" empty), PS3.15 Table E.1-1."""

_FREE_TEXT = {"LT", "ST", "UT"}
_DATES = {"DA", "DT"}
PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
MODIFIED_DATES_CODE = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")


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


class _Cleaner:
    """Walks one dataset (recursively) applying PROFILE and the generic rules."""

    def __init__(self, uid_map: dict, key: bytes, days: int | None, patient_id: str | None) -> None:
        self.uid_map, self.key, self.days, self.patient_id = uid_map, key, days, patient_id

    def uid(self, old: str) -> str:
        old = str(old).strip()
        if not old or UID(old).name != old:  # well-known DICOM UID (its name is in PS3.6 Annex A)
            return old
        if old not in self.uid_map:
            self.uid_map[old] = new_uid(old, self.key)
        return self.uid_map[old]

    def clean(self, ds: Dataset) -> None:
        for tag in list(ds.keys()):
            group = tag.group
            if (tag.is_private or (group & 0xFF00) in (0x5000, 0x6000) or group == 0xFFFE
                    or PROFILE.get(tag) == "X"):  # fmt: skip  (FFFE: a stray item delimiter)
                del ds[tag]
                continue
            try:
                elem = ds[tag]
            except (NotImplementedError, ValueError, TypeError, KeyError):  # undecodable: remove
                del ds[tag]
                continue
            vr = elem.VR
            if PROFILE.get(tag) == "Z":
                pid = self.patient_id if tag == 0x00100020 else None
                elem.value = Sequence([]) if vr == "SQ" else pid
            elif vr == "SQ":
                for item in elem.value:
                    self.clean(item)
            elif vr == "UI" and elem.value:
                values = elem.value if elem.VM > 1 else [elem.value]
                new = [self.uid(v) for v in values]
                elem.value = new if elem.VM > 1 else new[0]
            elif vr in _DATES and elem.value:
                values = elem.value if elem.VM > 1 else [elem.value]
                new = [_shift(v, vr, self.days) if self.days is not None else "" for v in values]
                elem.value = (new if elem.VM > 1 else new[0]) if any(new) else None
            elif vr == "TM" and self.days is None:
                elem.value = None
            elif vr == "PN":
                elem.value = None
            elif vr in _FREE_TEXT or vr == "UN":
                del ds[tag]


def deidentify_dataset(ds: Dataset, uid_map: dict, date_shift_days: int | None, *,
                       key: bytes | None = None, patient_id: str | None = None) -> Dataset:  # fmt: skip
    """De-identify ``ds`` in place (PS3.15 Table E.1-1, module docstring) and return it.

    Args:
        ds: a dataset read with pydicom (its file meta, if any, is rebuilt).
        uid_map: old UID -> new UID, read and extended; share it across the files of a study.
        date_shift_days: shift every date by this many days, or None to remove dates and times.
        key: the HMAC key for new UIDs (default: :func:`usssl.privacy.pseudonym.subject_key`).
        patient_id: a pseudonym to store as PatientID (default: empty).

    Returns:
        ``ds``, with PatientIdentityRemoved YES and the method recorded.
    """
    key = subject_key() if key is None else key
    _Cleaner(uid_map, key, date_shift_days, patient_id).clean(ds)
    ds.PatientIdentityRemoved = "YES"
    shifted = date_shift_days is not None
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if shifted else "REMOVED"
    ds.DeidentificationMethod = [  # LO, each value at most 64 characters
        f"usssl {version('usssl')}", "PS3.15 Basic Application Level Confidentiality Profile",
        "private tags removed", "UIDs replaced", f"dates {'shifted' if shifted else 'removed'}",
    ]  # fmt: skip
    codes = [PROFILE_CODE] + ([MODIFIED_DATES_CODE] if shifted else [])
    ds.DeidentificationMethodCodeSequence = Sequence([_code(*c) for c in codes])
    if hasattr(ds, "file_meta") and "SOPInstanceUID" in ds:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID"))
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "TransferSyntaxUID" in ds.file_meta:
            meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
        ds.file_meta = meta  # drops the source AE title and implementation of the sender
    if hasattr(ds, "preamble"):
        ds.preamble = b"\0" * 128  # a preamble can hold another file format (e.g. TIFF) with PHI
    return ds


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def deidentify_file(src: str | Path, dst: str | Path, *, uid_map: dict | None = None,
                    date_shift_days: int | None = None, key: bytes | None = None,
                    patient_id: str | None = None, allow_burned_in: bool = False) -> Path:  # fmt: skip
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
                       patient_id=patient_id)  # fmt: skip
    _even_fragments(ds)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".tmp-{dst.name}")
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def _even_fragments(ds: Dataset) -> None:
    """Re-encapsulate compressed pixel data whose fragments have odd lengths (seen in real files):
    writing would pad the value's end and break its item structure; PS3.5 A.4 pads each fragment."""
    elem = ds["PixelData"] if "PixelData" in ds else None
    if elem is None or not elem.is_undefined_length or len(elem.value) % 2 == 0:
        return
    frames = list(generate_frames(elem.value, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    elem.value = encapsulate(frames)


@dataclass
class DeidReport:
    """One row per input file: ``source`` (relative to the source root; keep the report with the
    source data, never with the shared copy), ``output`` (relative to the output root), ``status``
    (ok / refused / failed) and ``reason``."""

    rows: list[dict] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)


def deidentify_tree(src_root: str | Path, dst_root: str | Path, *, date_shift_days: int | None = None,
                    allow_burned_in: bool = False, key: bytes | None = None) -> DeidReport:  # fmt: skip
    """De-identify every ``*.dcm`` / ``*.dicom`` under ``src_root`` into ``dst_root``.

    Outputs are ``dst_root/<subject>/<file>.dcm`` with both names keyed hashes (the subject from
    PatientID, else StudyInstanceUID, as in ingest; never the original name). One UID map is
    shared by all files, so references between them survive. A file that fails or is refused is
    reported and the others go on. The report is returned, not written into ``dst_root``.
    """
    src_root, dst_root = Path(src_root), Path(dst_root)
    key = subject_key() if key is None else key
    uid_map: dict[str, str] = {}
    report = DeidReport()
    skip = dst_root.resolve()
    files = [p for p in sorted(src_root.rglob("*")) if p.suffix.lower() in DICOM_EXTENSIONS and p.is_file()
             and not p.name.startswith(".") and skip not in p.resolve().parents]  # fmt: skip
    for path in files:
        source = relative_source(path, src_root)
        subject = pseudonym(dicom_subject_id(path) or source, key, kind="subject")
        out = dst_root / subject / f"{pseudonym(source, key, kind='dicom')}.dcm"
        row = {"source": source, "output": out.relative_to(dst_root).as_posix(), "status": "ok",
               "reason": ""}  # fmt: skip
        try:
            deidentify_file(path, out, uid_map=uid_map, date_shift_days=date_shift_days, key=key,
                            patient_id=subject, allow_burned_in=allow_burned_in)  # fmt: skip
        except DataError as exc:
            row.update(status="refused" if isinstance(exc, RefusedError) else "failed", output="",
                       reason=str(exc).replace(str(path), source))  # fmt: skip
        except Exception as exc:  # bad input is data: reported, the others go on
            reason = f"{type(exc).__name__}: {exc}".replace(str(path), source)
            row.update(status="failed", output="", reason=reason)
        report.rows.append(row)
    log.info("de-identified %d of %d DICOM file(s) (%d refused, %d failed)", report.count("ok"),
             len(files), report.count("refused"), report.count("failed"))  # fmt: skip
    return report
