"""The one atomic-write helper: whole files or nothing, unique temporary names, permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from usssl.engine.files import replace_atomic, save_atomic, write_json_atomic, write_text_atomic
from usssl.engine.progress import progress


def test_text_and_json_are_written_whole_with_the_requested_mode(tmp_path):
    path = write_text_atomic(tmp_path / "sub" / "report.csv", "a,b\n1,2\n", mode=0o600)
    assert path.read_text() == "a,b\n1,2\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    write_json_atomic(tmp_path / "x.json", {"n": 3})
    assert (tmp_path / "x.json").read_text() == '{\n  "n": 3\n}\n'
    write_json_atomic(tmp_path / "y.json", {"p": tmp_path}, newline=False, default=str)
    assert json.loads((tmp_path / "y.json").read_text()) == {"p": str(tmp_path)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "x.json", "y.json"]  # no temporary left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "keep.txt", "old")

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomic(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_the_temporary_name_keeps_the_suffix(tmp_path):
    seen = []
    replace_atomic(tmp_path / "model.pt2", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"x")))
    assert seen[0].startswith(".tmp-") and seen[0].endswith("-model.pt2")


def test_save_atomic_round_trips_a_state_dict(tmp_path):
    save_atomic({"w": torch.arange(3.0)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], torch.tensor([0.0, 1.0, 2.0]))


def test_a_disabled_progress_bar_is_a_no_op_handle():
    with progress("work", total=3, enabled=False) as bar:
        bar.advance()
        bar.reset("other", 5)
    assert bar.bar is None
