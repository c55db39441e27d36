"""Keyed pseudonyms: deterministic per key, different across keys and domains, never the raw id."""

from __future__ import annotations

import hashlib
import hmac
import logging
import multiprocessing
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usssl.errors import DataError
from usssl.privacy.pseudonym import KEY_ENV, KEY_FILE_ENV, key_check, pseudonym, subject_key


def test_deterministic_per_key_and_different_across_keys():
    a = pseudonym("PID-0042", b"key-one")
    assert a == pseudonym("PID-0042", b"key-one")
    assert a != pseudonym("PID-0042", b"key-two")
    assert a != pseudonym("PID-0043", b"key-one")
    assert len(a) == 16 and int(a, 16) >= 0


def test_domains_separate_shards_from_subjects():
    assert pseudonym("scan_000", b"k", kind="shard") != pseudonym("scan_000", b"k", kind="subject")


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_never_the_raw_id(value):
    out = pseudonym(value, b"some key")
    assert out != value
    if len(value) >= 6:  # shorter hex strings may occur inside a digest by chance
        assert value not in out
    assert len(out) == 16 and set(out) <= set("0123456789abcdef")


def test_empty_key_is_refused():
    with pytest.raises(ValueError):
        pseudonym("x", b"")


def test_key_from_environment(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "from-env")
    assert subject_key() == b"from-env"


def test_key_file_created_once_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = tmp_path / "conf" / "subject.key"
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    with caplog.at_level(logging.WARNING, logger="usssl.privacy.pseudonym"):
        key = subject_key()
    assert len(key) == 32 and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in caplog.text and "safe" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="usssl.privacy.pseudonym"):
        assert subject_key() == key  # read back, no new warning
    assert caplog.text == ""
    assert key_check(key) == key_check(key) != key_check(b"other")
    assert key.hex() not in key_check(key)


def test_empty_key_file_is_a_data_error(monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = tmp_path / "subject.key"
    path.write_bytes(b"")
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    with pytest.raises(DataError, match="subject.key") as info:
        subject_key()
    message = str(info.value)
    assert "restore it from your backup" in message and "delete" not in message.lower()  # never orphan pseudonyms
    assert path.read_bytes() == b""  # left as it is


def _create_key(barrier, results) -> None:
    barrier.wait()  # all at once
    try:
        results.put(("ok", subject_key().hex()))
    except Exception as exc:  # noqa: BLE001 (reported to the test)
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def test_eight_concurrent_creators_end_with_one_key_and_no_error(monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    ctx = multiprocessing.get_context("fork")
    for round_ in range(5):
        path = tmp_path / f"round-{round_}" / "subject.key"
        monkeypatch.setenv(KEY_FILE_ENV, str(path))
        barrier, results = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_create_key, args=(barrier, results)) for _ in range(8)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert [status for status, _ in outcomes] == ["ok"] * 8, outcomes
        assert {key for _, key in outcomes} == {path.read_bytes().hex()} and len(path.read_bytes()) == 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [p.name for p in path.parent.iterdir()] == ["subject.key"]  # no temporary file left


def test_a_file_name_that_is_not_utf8_has_a_pseudonym():
    raw = os.fsdecode(b"scan_\xff\xfe.mp4")  # what os.listdir gives for Latin-1 bytes
    a = pseudonym(raw, b"k", kind="shard")
    assert a == pseudonym(raw, b"k", kind="shard") != pseudonym("scan_\ufffd\ufffd.mp4", b"k", kind="shard")
    expected = hmac.new(b"k", b"usssl/shard/scan_\xff\xfe.mp4", hashlib.sha256).hexdigest()[:16]
    assert a == expected  # hashed as the name's bytes
    assert pseudonym("PID-0042", b"k") == hmac.new(b"k", b"usssl/subject/PID-0042", hashlib.sha256).hexdigest()[:16]
