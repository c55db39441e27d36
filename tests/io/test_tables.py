"""Label, gaze and subject tables: recording keys with extensions stripped (two-part ones as one)."""

from __future__ import annotations

import numpy as np
import pytest

from usssl.io.registry import READERS
from usssl.errors import DataError
from usssl.io.tables import load_tables, strip_extension

EXTENSIONS = frozenset(READERS)


@pytest.mark.parametrize(("name", "key"), [
    ("scan01.nii.gz", "scan01"), ("scan01.NII.GZ", "scan01"), ("scan01.nii", "scan01"),
    ("scan_000.mp4", "scan_000"), ("videos/scan_000.MP4", "scan_000"), ("cine.1.dcm", "cine.1"),
    ("IM0001", "IM0001"), ("scan01.gz", "scan01.gz"), ("1.2.840.113619", "1.2.840.113619"),
])  # fmt: skip
def test_strip_extension_takes_the_longest_known_suffix(name, key):
    assert strip_extension(name, EXTENSIONS) == key


def test_tables_join_nifti_and_extensionless_dicom_names_to_their_keys(tmp_path):
    (tmp_path / "labels.csv").write_text(
        "video,frame,plane\nscan01.nii.gz,0,heart\nscan01.nii.gz,3,background\nIM0001,2,heart\n")
    (tmp_path / "gaze.csv").write_text("video,frame,x,y\nscan01.nii.gz,1,4.5,6.0\n")
    (tmp_path / "subjects.csv").write_text("video,patient_id\nscan01.nii.gz, P-77 \nIM0001,P-78\n")
    tables = load_tables([tmp_path], extensions=EXTENSIONS)
    assert set(tables.labels) == {"scan01", "IM0001"} and set(tables.gaze) == {"scan01"}
    assert tables.classes == ["background", "heart"]
    frames, classes = tables.labels["scan01"]
    np.testing.assert_array_equal(frames, [0, 3])
    np.testing.assert_array_equal(classes, [1, 0])
    np.testing.assert_allclose(tables.gaze["scan01"][1], [[4.5, 6.0]])
    assert tables.subjects == {"scan01": "P-77", "IM0001": "P-78"}


def test_a_table_without_its_columns_names_the_file(tmp_path):
    (tmp_path / "labels.csv").write_text("video,plane\nscan01.nii.gz,heart\n")
    with pytest.raises(DataError, match=r"labels\.csv: missing column\(s\) \['frame'\]"):
        load_tables([tmp_path], extensions=EXTENSIONS)
