"""De-identifying a tree: the issue's leaked attributes, one study's UIDs, the options named, the 0600 report."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
import fixtures_dicom as fd  # noqa: E402

from usssl.privacy.deid import (  # noqa: E402
    KEEP_DESCRIPTORS,
    RETAIN_DATES,
    DeidReport,
    applied_options,
    deidentify_tree,
    describe_options,
    new_uid,
)

KEY = b"deid-report-key"
STUDY = "1.2.826.0.1.3680043.9.7777.1"


def _person(name: str) -> Sequence:
    item = Dataset()
    item.PersonName, item.PersonTelephoneNumbers = name, "+44 SECRET 0100"
    return Sequence([item])


LEAKED = {  # what the issue found kept before the whole table was applied (Table E.1-1 action)
    "ClinicalTrialSubjectID": "SUBJ-SECRET",  # D
    "ClinicalTrialSiteName": "Secret Site",  # Z
    "ClinicalTrialSponsorName": "Secret Sponsor",  # D
    "PersonTelephoneNumbers": "+44 SECRET 0199",  # X
    "ReasonForTheRequestedProcedure": "pain after SECRET fall",  # X
    "RequestedProcedureLocation": "SECRET ward 3",  # X
    "DeviceDescription": "SECRET probe",  # X
    "StationAETitle": "SECRETAE",  # X
    "GPSLatitude": 51.5,  # X
    "ActualHumanPerformersSequence": _person("Performer^Secret"),  # X
    "AuthorObserverSequence": _person("Author^Secret"),  # X
}


def test_attributes_the_issue_found_kept_are_gone(tmp_path):
    acq = Dataset()
    acq.TextValue = "SECRET context"
    fd.write_dicom(tmp_path / "src" / "a.dcm", fd.ramp_frames(t=1), AcquisitionContextSequence=Sequence([acq]),
                   **LEAKED)  # fmt: skip
    report = deidentify_tree(tmp_path / "src", tmp_path / "out", key=KEY)
    out = tmp_path / "out" / report.rows[0]["output"]
    ds = pydicom.dcmread(out)
    assert ds.ClinicalTrialSubjectID == ds.ClinicalTrialSponsorName == "ANONYMIZED"  # D: a dummy
    assert ds.ClinicalTrialSiteName == ""  # Z
    removed = set(LEAKED) - {"ClinicalTrialSubjectID", "ClinicalTrialSponsorName", "ClinicalTrialSiteName"}
    assert [k for k in removed | {"AcquisitionContextSequence"} if k in ds] == []  # X, X/Z: removed whole
    assert b"SECRET" not in out.read_bytes() and b"Secret" not in out.read_bytes()


def test_uids_consistent_across_a_study_and_references_kept(tmp_path):
    src = tmp_path / "src"
    a = pydicom.dcmread(fd.write_dicom(src / "p1" / "a.dcm", fd.ramp_frames(t=1)))
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = a.SOPClassUID, a.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID, series.ReferencedInstanceSequence = a.SeriesInstanceUID, Sequence([ref])
    fd.write_dicom(src / "p1" / "b.dcm", fd.ramp_frames(t=1), ReferencedSeriesSequence=Sequence([series]))
    report = deidentify_tree(src, tmp_path / "out", key=KEY)
    out = {Path(r["source"]).name: pydicom.dcmread(tmp_path / "out" / r["output"]) for r in report.rows}
    assert out["a.dcm"].StudyInstanceUID == out["b.dcm"].StudyInstanceUID == new_uid(STUDY, KEY)
    assert out["a.dcm"].SeriesInstanceUID == out["b.dcm"].SeriesInstanceUID
    assert out["a.dcm"].FrameOfReferenceUID == out["b.dcm"].FrameOfReferenceUID
    assert out["a.dcm"].SOPInstanceUID != out["b.dcm"].SOPInstanceUID
    item = out["b.dcm"].ReferencedSeriesSequence[0]
    assert item.SeriesInstanceUID == out["a.dcm"].SeriesInstanceUID
    assert item.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == out["a.dcm"].SOPInstanceUID
    assert out["a.dcm"].PatientID == out["b.dcm"].PatientID != ""  # one subject pseudonym


@pytest.mark.parametrize(("days", "keep", "names"), [
    (None, False, []), (-7, False, [RETAIN_DATES]), (0, True, ["retain-longitudinal-full-dates", KEEP_DESCRIPTORS]),
])  # fmt: skip
def test_report_names_the_options_applied(tmp_path, days, keep, names):
    fd.write_dicom(tmp_path / "src" / "a.dcm", fd.ramp_frames(t=1), SeriesDescription="Cardiac 4CH")
    report = deidentify_tree(tmp_path / "src", tmp_path / "out", key=KEY, date_shift_days=days,
                             keep_descriptors=keep)  # fmt: skip
    assert report.options == applied_options(days, keep) == names
    assert report.summary == describe_options(days, keep)
    assert report.summary.startswith("PS3.15 Basic Profile (Table E.1-1, DICOM 2026c); ")
    assert all(f"{n}: " in report.summary for n in names) and ("no options" in report.summary) == (not names)
    if days == -7:
        assert "shifted by -7 days" in report.summary
    ds = pydicom.dcmread(tmp_path / "out" / report.rows[0]["output"])
    assert ds.StudyDate == {None: "", -7: "20240108", 0: "20240115"}[days]
    assert ("SeriesDescription" in ds) == keep and list(ds.DeidentificationMethod)[4:] == names


def test_report_csv_is_owner_only(tmp_path):
    report = DeidReport(rows=[{"source": "Secretname/a.dcm", "output": "abc/def.dcm", "status": "ok", "reason": ""}])
    path = tmp_path / "r.csv"
    path.write_text("old")
    path.chmod(0o644)
    old = os.umask(0o022)
    try:
        assert report.write_csv(path) == path
        assert path.stat().st_mode & 0o777 == 0o600
        fresh = report.write_csv(tmp_path / "sub" / "fresh.csv")
        assert fresh.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    with open(path, newline="") as handle:
        assert list(csv.DictReader(handle)) == report.rows
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
