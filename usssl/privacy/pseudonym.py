"""Pseudonymous ids: HMAC-SHA256 of a source id under a secret key, truncated to 16 hex characters.

The key comes from the environment variable ``USSSL_SUBJECT_KEY``, else from a key file
(``$USSSL_KEY_FILE`` or ``~/.config/usssl/subject.key``) created with 32 random bytes on first
use. Whoever holds the key can re-identify subjects from a list of patient ids, so it is never
written to the cache; keep it with the source data. The same key gives the same pseudonyms, which
is what makes ingest resumable and lets new recordings of a subject join the subject's split.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path

from usssl.engine.lock import create_exclusive
from usssl.errors import DataError

log = logging.getLogger(__name__)

KEY_ENV = "USSSL_SUBJECT_KEY"
KEY_FILE_ENV = "USSSL_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/usssl/subject.key")
PSEUDONYM_CHARS = 16
_EMPTY_KEY_TRIES = 20  # 1 s of retries before an empty key file is an error


def key_file_path() -> Path:
    """Where the key file is (or will be created)."""
    return Path(os.environ.get(KEY_FILE_ENV) or DEFAULT_KEY_FILE).expanduser()


def subject_key() -> bytes:
    """The secret pseudonymisation key (env ``USSSL_SUBJECT_KEY``, else the key file).

    Creates the key file (32 random bytes, mode 0600) on first use and logs where it is. Creation
    is atomic (``usssl.engine.lock.create_exclusive``: written under a temporary name, then linked
    into place), so any number of processes starting at once end with one key, and none of them
    ever reads a half-written file.

    Raises:
        DataError: the key file exists but is empty or unreadable (the message never advises
            deleting it: pseudonyms made with a key cannot be reproduced without it).
    """
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode()
    path = key_file_path()
    if not path.exists():
        try:
            created = create_exclusive(path, secrets.token_bytes(32), mode=0o600)
        except OSError as exc:
            raise DataError(f"{path}: cannot create the subject key file ({exc}); set {KEY_FILE_ENV} to a "
                            f"writable place, or set {KEY_ENV}") from None  # fmt: skip
        if created:
            log.warning(
                "created a new subject key at %s: it turns patient ids into pseudonyms. Keep it "
                "safe and private, back it up with the source data, and reuse it for later "
                "ingests (or set %s)", path, KEY_ENV,
            )  # fmt: skip
    for attempt in range(_EMPTY_KEY_TRIES):
        try:
            key = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read the subject key ({exc}); check its permissions, or set "
                            f"{KEY_ENV}") from None  # fmt: skip
        if key:
            return key
        time.sleep(0.05)  # a creator on a file system without hard links may still be writing it
    raise DataError(
        f"{path}: the subject key file is empty. If this file held a key before, restore it from your "
        f"backup: every cache and pseudonym made with that key needs it. If no cache was ever made "
        f"with it, point {KEY_FILE_ENV} at a new file name (usssl creates the key there) or set {KEY_ENV}"
    )


def pseudonym(value: str, key: bytes, kind: str = "subject") -> str:
    """16 hex characters of HMAC-SHA256(key, "usssl/<kind>/<value>").

    ``kind`` separates domains: a shard id and a subject id made from the same string differ.
    ``value`` may hold a file name that is not valid UTF-8 (Python's surrogate escapes): it is hashed
    as the name's bytes; valid text gives the same pseudonym as always.

    Example:
        >>> pseudonym("PID-0042", b"secret")  # doctest: +SKIP
        '3f0c9a...'
    """
    if not key:
        raise ValueError("the pseudonymisation key is empty")
    # surrogateescape: a file name that is not valid UTF-8 (os.fsdecode's surrogates) hashes as its bytes
    message = f"usssl/{kind}/{value}".encode("utf-8", "surrogateescape")
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]


def key_check(key: bytes) -> str:
    """A fingerprint that tells whether two caches used the same key, without revealing it."""
    return pseudonym("key-check", key, kind="check")
