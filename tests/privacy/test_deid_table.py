"""Every attribute of PS3.15 Table E.1-1 planted in one dataset: each action, each option, each IOD rule."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from usssl.privacy import ps315_table
from usssl.privacy.deid import (
    CLEAN_DESCRIPTORS_C,
    EDITION,
    ENHANCED_US_VOLUME,
    KEEP_DESCRIPTORS,
    KEYWORDS,
    MODIFIED_DATES_C,
    PROFILE,
    PROFILE_MASKS,
    RETAIN_DATES,
    US_MULTIFRAME,
    deidentify_dataset,
    deidentify_file,
    new_uid,
    option_attributes,
    resolve_action,
)

KEY = b"deid-table-key"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "privacy.md"
# the strictest valid action of each Table E.1-1 action for an attribute the US IODs do not require
STRICTEST = {"X": "X", "Z": "Z", "D": "D", "U": "U", "Z/D": "Z", "X/Z": "X", "X/D": "X", "X/Z/D": "X", "X/Z/U*": "X"}
ENHANCED = {"ContentDate": "D", "ContentTime": "D", "AcquisitionDateTime": "D", "DeviceSerialNumber": "D",
            "AcquisitionContextSequence": "Z"}  # fmt: skip  (Type 1 / Type 2 in Enhanced US Volume)


def _vr(tag: int) -> str:
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:  # newer than pydicom's dictionary: written as UN
        return "UN"


def _planted(tag: int, vr: str) -> object:
    """A value of ``vr`` that names ``tag`` where the VR can hold text."""
    mark = f"S{tag:08X}"
    text = {"AE": mark, "CS": mark, "SH": f"SECRET {tag:08X}", "PN": f"Secret^{tag:08X}",
            "UR": f"http://{mark.lower()}.invalid/", "DA": "20240115", "DT": "20240115101502", "TM": "101530",
            "AS": "042Y", "DS": "1.5", "IS": "7", "UI": f"1.2.826.0.1.3680043.9.7777.8.{tag}", "AT": 0x00100010}
    if vr in text:
        return text[vr]
    if vr in ("FL", "FD", "SL", "SS", "SV", "UL", "US", "UV"):
        return 7
    if vr.startswith("O") or vr == "UN":
        return mark.encode().ljust(16, b"_")
    if vr == "SQ":
        item = Dataset()
        item.PatientName, item.TextValue = "Nested^Secret", f"text {mark}"
        item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.9.7777.9.{tag}"
        return Sequence([item])
    return f"SECRET TEXT {mark}"  # LO LT ST UC UT


def planted_dataset(sop_class: str = US_MULTIFRAME, *, meta_and_commands: bool = True) -> Dataset:
    """Every exact tag of the table (groups 0000/0002 only when asked) plus curves and overlays."""
    ds = Dataset()
    ds.SOPClassUID, ds.Modality = sop_class, "US"
    for tag in PROFILE:
        if tag >> 16 in (0x0000, 0x0002) and not meta_and_commands:
            continue
        vr = _vr(tag)
        ds.add(DataElement(tag, vr, _planted(tag, vr)))
    for tag, vr, value in ((0x50003000, "OB", b"curvecurve"), (0x60003000, "OB", b"\1" * 8),
                           (0x60004000, "LT", "overlay comment SECRET")):  # fmt: skip
        ds.add(DataElement(tag, vr, value))
    return ds


def _assert_outcome(tag: int, action: str, out: Dataset, days: int | None) -> None:
    vr, planted, name = _vr(tag), _planted(tag, _vr(tag)), KEYWORDS[tag]
    if action == "X":
        assert tag not in out, name
        return
    elem = out[tag]
    if vr == "SQ":
        if action == "Z":
            assert len(elem.value) == 0, name
        else:  # D, U, K: kept, items cleaned
            item = elem.value[0]
            assert not item.PatientName and "TextValue" not in item, name
            assert item.ReferencedSOPInstanceUID == new_uid(planted[0].ReferencedSOPInstanceUID, KEY), name
    elif action == "Z":
        assert elem.value in (None, "", b""), name
    elif action == "U" or (action == "D" and vr == "UI"):
        assert elem.value == new_uid(planted, KEY), name
    elif action == "D":
        assert elem.value not in (None, "", b"") and elem.value != planted, name
    elif action == "K":
        assert elem.value == planted, name
    elif action == "C":
        shifted = {"DA": "20240105", "DT": "20240105101502", "TM": planted}[vr] if days == -10 else planted
        assert elem.value == shifted, name


def test_table_is_the_whole_edition():
    assert EDITION == ps315_table.EDITION == "2026c"
    module = Path(ps315_table.__file__).read_text()
    assert "dicom-anonymizer 2.1.0" in ps315_table.SOURCE and "Copyright 2020, Kitware Europe" in module
    assert "2024b" in ps315_table.OPTIONS_SOURCE and len(module.splitlines()) < 400
    counts = Counter(PROFILE.values()) + Counter(a for _, _, a in PROFILE_MASKS)
    assert counts == {"X": 415, "D": 93, "U": 55, "Z": 42, "X/D": 23, "X/Z": 11, "X/Z/D": 8, "Z/D": 6, "X/Z/U*": 2}
    assert len(PROFILE_MASKS) == 3 and len(KEYWORDS) == len(PROFILE) == 652
    assert KEYWORDS[0x00120040] == "ClinicalTrialSubjectID" and PROFILE[0x00120040] == "D"
    assert (len(MODIFIED_DATES_C), len(CLEAN_DESCRIPTORS_C)) == (162, 125)
    assert not MODIFIED_DATES_C & CLEAN_DESCRIPTORS_C


@pytest.mark.parametrize("sop_class", [US_MULTIFRAME, ENHANCED_US_VOLUME])
def test_every_attribute_gets_its_action(sop_class):
    out = deidentify_dataset(planted_dataset(sop_class), {}, None, key=KEY)
    expected = Counter()
    for tag, action in PROFILE.items():
        want = STRICTEST[action]
        if sop_class == ENHANCED_US_VOLUME:
            want = ENHANCED.get(KEYWORDS[tag], want)
        assert resolve_action(tag, sop_class) == want, KEYWORDS[tag]
        _assert_outcome(tag, want, out, None)
        expected[want] += 1
    assert not [t for t in out.keys() if t.group in (0x5000, 0x6000)]
    # the outcome of each action, as a count of attributes (US Multi-frame / Enhanced US Volume)
    assert dict(expected) == ({"X": 456, "Z": 48, "D": 93, "U": 55} if sop_class == US_MULTIFRAME
                              else {"X": 453, "Z": 47, "D": 97, "U": 55})  # fmt: skip


def test_patient_sex_neutered_is_kept_empty_for_an_animal():
    tag = 0x00102203
    assert resolve_action(tag, US_MULTIFRAME) == "X"
    ds = planted_dataset(meta_and_commands=False)
    ds.PatientSpeciesDescription = "canine"
    assert deidentify_dataset(ds, {}, None, key=KEY)[tag].value in (None, "")


@pytest.mark.parametrize(("days", "keep"), [(-10, True), (0, False)])
def test_options_keep_exactly_their_columns(days, keep):
    out = deidentify_dataset(planted_dataset(), {}, days, key=KEY, keep_descriptors=keep)
    for tag, action in PROFILE.items():
        want = STRICTEST[action]
        if tag in MODIFIED_DATES_C:
            want = "C"
        elif keep and tag in CLEAN_DESCRIPTORS_C:
            want = "K"
        assert resolve_action(tag, US_MULTIFRAME, retain_dates=True, keep_descriptors=keep) == want
        _assert_outcome(tag, want, out, days)
    assert "PatientBirthDate" not in option_attributes(RETAIN_DATES) and not out.PatientBirthDate
    assert "GPSTimeStamp" not in out and "StudyDescription" in option_attributes(KEEP_DESCRIPTORS)
    codes = [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107" if days else "113106"]  # 113105 is never claimed
    assert out.LongitudinalTemporalInformationModified == ("MODIFIED" if days else "UNMODIFIED")


def test_written_file_keeps_no_planted_value(tmp_path):
    ds = planted_dataset(meta_and_commands=False)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(tmp_path / "all.dcm", enforce_file_format=True)
    data = deidentify_file(tmp_path / "all.dcm", tmp_path / "out.dcm", key=KEY).read_bytes()
    marks = {t: f"S{t:08X}".encode() for t in PROFILE}  # in every text and binary value planted
    leaks = [KEYWORDS[t] for t, mark in marks.items() if mark in data or mark.lower() in data]
    assert leaks == [] and b"Secret" not in data and b"SECRET" not in data
    back = pydicom.dcmread(tmp_path / "out.dcm")
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID == new_uid(ds.SOPInstanceUID, KEY)


@pytest.mark.parametrize("name", [RETAIN_DATES, KEEP_DESCRIPTORS])
def test_docs_list_exactly_what_each_option_keeps(name):
    block = re.search(rf"<!-- keeps: {name} -->\s*```text\n(.*?)```", DOCS.read_text(), re.S)
    assert block, f"docs/privacy.md has no list for {name}"
    assert block[1].split() == option_attributes(name)
