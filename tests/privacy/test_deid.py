"""DICOM de-identification (PS3.15 Basic Profile): PHI gone, UIDs consistent, trees, refusals."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
import fixtures_dicom as fd  # noqa: E402

from usssl.errors import DataError  # noqa: E402
from usssl.io.dicom import read_dicom  # noqa: E402
from usssl.privacy.deid import (  # noqa: E402
    PROFILE,
    RefusedError,
    deidentify_dataset,
    deidentify_file,
    deidentify_tree,
    new_uid,
)

KEY = b"deid-test-key"
STUDY = "1.2.826.0.1.3680043.9.7777.1"


def _with_nested_phi(path: Path) -> Path:
    """Add private tags and PHI nested two levels deep to a written test DICOM."""
    ds = pydicom.dcmread(path)
    block = ds.private_block(0x0009, "SECRET VENDOR", create=True)
    block.add_new(0x01, "LO", "private Secretname")
    inner = Dataset()
    inner.PatientName = "Nested^Secretname"  # PN at depth 2
    inner.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    inner.add_new(0x00110010, "LO", "OTHER VENDOR")  # private creator inside a sequence
    inner.add_new(0x00111001, "LO", "nested private PID-SECRET-4711")
    item = Dataset()
    item.SeriesInstanceUID = ds.SeriesInstanceUID
    item.ReferencedImageSequence = Sequence([inner])  # Table E.1-1: X
    item.ReferencedInstanceSequence = Sequence([inner])  # not in the table: cleaned recursively
    item.PerformingPhysicianName = "Performer^Secret"
    ds.ReferencedSeriesSequence = Sequence([item])
    ds.RequestAttributesSequence = Sequence([Dataset()])
    ds.save_as(path)
    return path


@pytest.fixture()
def phi_file(tmp_path) -> Path:
    return _with_nested_phi(fd.write_dicom(tmp_path / "src" / "Secretname_Tessa.dcm", fd.ramp_frames(),
                                           FrameTime=40.0, regions=[fd.region((4, 2, 28, 22))]))  # fmt: skip


def _uids(ds: Dataset) -> set[str]:
    """Every UID in ``ds`` (nested too) that is not a well-known DICOM UID."""
    found = set()
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
        except NotImplementedError:  # a stray delimiter in one real file (fo-dicom DIRW0007)
            continue
        if elem.VR == "SQ":
            for item in elem.value:
                found |= _uids(item)
        elif elem.VR == "UI" and elem.value:
            found |= {str(v) for v in (elem.value if elem.VM > 1 else [elem.value]) if UID(v).name == str(v)}
    return found


def test_profile_table_names_real_attributes():
    assert None not in PROFILE
    assert set(PROFILE.values()) == {"X", "Z", "D", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
    assert len(PROFILE) > 600  # the whole Table E.1-1 (tests/privacy/test_deid_table.py checks each)


def test_phi_private_tags_and_nested_sequences_are_cleaned(phi_file, tmp_path):
    original = pydicom.dcmread(phi_file)
    old_uids = _uids(original)
    uid_map: dict = {}
    out = deidentify_file(phi_file, tmp_path / "out" / "x.dcm", uid_map=uid_map, key=KEY)
    data = out.read_bytes()
    secrets = [*fd.PHI.values(), "Secretname", "Performer", "SECRET VENDOR", "OTHER VENDOR", *old_uids]
    for secret in secrets:
        assert secret.encode() not in data, secret
    ds = pydicom.dcmread(out)
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientName == "" and ds.PatientID == ""
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert ds.StudyDate == "" and ds.StudyTime == "" and "PatientBirthDate" in ds  # Z: empty, kept
    for keyword in ("InstitutionName", "OperatorsName", "StationName", "DeviceSerialNumber",
                    "StudyDescription", "ImageComments", "RequestAttributesSequence"):  # fmt: skip
        assert keyword not in ds, keyword
    found_private = []
    ds.walk(lambda d, e: found_private.append(e.tag) if e.tag.is_private else None)
    assert found_private == []
    item = ds.ReferencedSeriesSequence[0]
    assert "ReferencedImageSequence" not in item and "PerformingPhysicianName" not in item
    nested = item.ReferencedInstanceSequence[0]
    assert nested.PatientName == "" and len(nested) == 2  # PN emptied, private creator + value gone
    # one UID, the same new value everywhere it occurs
    assert item.SeriesInstanceUID == ds.SeriesInstanceUID == uid_map[original.SeriesInstanceUID]
    assert nested.ReferencedSOPInstanceUID == ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.SOPInstanceUID == new_uid(original.SOPInstanceUID, KEY) and ds.SOPInstanceUID.startswith("2.25.")
    assert len(ds.SOPInstanceUID) <= 64 and ds.SOPClassUID == original.SOPClassUID  # well-known: kept
    assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert old_uids.isdisjoint(_uids(ds))
    # the pixels and the ultrasound region survive: the file still reads
    rec = read_dicom(out)
    np.testing.assert_array_equal(np.concatenate(list(rec.iter_frames())), fd.ramp_frames())
    assert rec.meta["region_box"] == [4, 2, 28, 22] and rec.fps == 25.0


def test_date_shift_keeps_intervals_and_times():
    ds = Dataset()
    ds.StudyDate, ds.StudyTime, ds.PatientBirthDate = "20240115", "101500", "19800214"
    ds.AcquisitionDateTime = "20240115101502.5"
    deidentify_dataset(ds, {}, -10, key=KEY)
    assert (ds.StudyDate, ds.StudyTime, ds.AcquisitionDateTime) == ("20240105", "101500", "20240105101502.5")
    assert "PatientBirthDate" in ds and not ds.PatientBirthDate  # Table E.1-1: Z, whatever the shift
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113107"]


def test_uids_consistent_across_files_of_one_study(tmp_path):
    a = fd.write_dicom(tmp_path / "a.dcm", fd.ramp_frames(t=1))
    b = fd.write_dicom(tmp_path / "b.dcm", fd.ramp_frames(t=1))
    uid_map: dict = {}
    out = [pydicom.dcmread(deidentify_file(p, tmp_path / f"o{p.name}", uid_map=uid_map, key=KEY))
           for p in (a, b)]  # fmt: skip
    assert out[0].StudyInstanceUID == out[1].StudyInstanceUID == uid_map[STUDY]
    assert out[0].FrameOfReferenceUID == out[1].FrameOfReferenceUID
    assert out[0].SOPInstanceUID != out[1].SOPInstanceUID
    again = deidentify_dataset(pydicom.dcmread(a), {}, None, key=KEY)  # same key, fresh map
    assert again.StudyInstanceUID == out[0].StudyInstanceUID
    other = deidentify_dataset(pydicom.dcmread(a), {}, None, key=b"another key")
    assert other.StudyInstanceUID != out[0].StudyInstanceUID


def test_burned_in_without_region_is_refused(tmp_path):
    path = fd.write_dicom(tmp_path / "burned.dcm", fd.ramp_frames(t=1), BurnedInAnnotation="YES")
    with pytest.raises(RefusedError, match=r"burned\.dcm: refused: BurnedInAnnotation is YES"):
        deidentify_file(path, tmp_path / "o.dcm", key=KEY)
    assert not (tmp_path / "o.dcm").exists()
    deidentify_file(path, tmp_path / "o.dcm", key=KEY, allow_burned_in=True)
    with_region = fd.write_dicom(tmp_path / "r.dcm", fd.ramp_frames(t=1), BurnedInAnnotation="YES",
                                 regions=[fd.region((0, 0, 16, 16))])  # fmt: skip
    deidentify_file(with_region, tmp_path / "o2.dcm", key=KEY)  # a region to crop to: accepted


def test_tree_pseudonymous_names_and_per_file_failures(phi_file, tmp_path):
    src = phi_file.parent
    fd.write_dicom(src / "sub" / "second.dcm", fd.ramp_frames(t=2), BurnedInAnnotation="YES")
    (src / "broken.dcm").write_bytes(b"not dicom")
    report = deidentify_tree(src, tmp_path / "shared", key=KEY)
    rows = {r["source"]: r for r in report.rows}
    assert rows["broken.dcm"]["status"] == "failed" and "broken.dcm" in rows["broken.dcm"]["reason"]
    assert rows["sub/second.dcm"]["status"] == "refused"
    assert rows["Secretname_Tessa.dcm"]["status"] == "ok" and report.count("ok") == 1
    outputs = [p for p in (tmp_path / "shared").rglob("*") if p.is_file()]
    assert [p.relative_to(tmp_path / "shared").as_posix() for p in outputs] == [rows["Secretname_Tessa.dcm"]["output"]]
    assert "Secretname" not in outputs[0].as_posix() and str(tmp_path) not in rows["broken.dcm"]["reason"]
    assert pydicom.dcmread(outputs[0]).PatientID == outputs[0].parent.name  # the subject pseudonym


@pytest.mark.skipif(not fd.real_files(), reason=f"real DICOMs absent ({fd.DICOM_US})")
def test_real_files_lose_names_ids_and_uids(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(fd.DICOM_US, src, ignore=shutil.ignore_patterns("*.json"))
    report = deidentify_tree(src, tmp_path / "out", key=KEY, allow_burned_in=True)
    assert report.count("ok") == len(fd.real_files()), [r for r in report.rows if r["status"] != "ok"]
    secrets = set(fd.REAL_NAMES) | {n.split("^")[0] for n in fd.REAL_NAMES}
    for path in src.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        secrets |= _uids(ds) | {str(ds.get("PatientID", ""))}
        secrets |= {str(ds.PatientName).split("^")[0]} if ds.get("PatientName") else set()
    # short values and placeholders ("XXXXXX", "BBBBBBB") occur by chance in uncompressed pixels
    secrets = {s for s in secrets if len(s) >= 5 and len(set(s)) > 2}
    for out in (tmp_path / "out").rglob("*.dcm"):
        data = out.read_bytes()
        leaks = [s for s in secrets if s.encode() in data]
        assert not leaks, f"{leaks} in {out.name}"
    for row in report.rows:  # still valid DICOM with the same frames, region and timing
        before = read_dicom(src / row["source"]) if _decodable(src / row["source"]) else None
        if before is not None:
            after = read_dicom(tmp_path / "out" / row["output"])
            assert (after.n_frames, after.fps, after.meta["region_box"]) == (
                before.n_frames, before.fps, before.meta["region_box"])
            np.testing.assert_array_equal(next(after.iter_frames(1)), next(before.iter_frames(1)))
    # the refused-by-default file: burned-in text and no region
    strict = deidentify_tree(src, tmp_path / "strict", key=KEY)
    refused = sorted(r["source"] for r in strict.rows if r["status"] == "refused")
    assert refused == ["fo-dicom/GH364.dcm"]


def _decodable(path: Path) -> bool:
    try:
        read_dicom(path)
    except DataError:  # no decoder installed for its transfer syntax
        return False
    return True


def test_non_dicom_is_a_data_error(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"")
    with pytest.raises(DataError, match=r"x\.dcm: not a readable DICOM file"):
        deidentify_file(tmp_path / "x.dcm", tmp_path / "y.dcm", key=KEY)
