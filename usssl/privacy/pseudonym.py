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
from pathlib import Path

from usssl.errors import DataError

log = logging.getLogger(__name__)

KEY_ENV = "USSSL_SUBJECT_KEY"
KEY_FILE_ENV = "USSSL_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/usssl/subject.key")
PSEUDONYM_CHARS = 16


def key_file_path() -> Path:
    """Where the key file is (or will be created)."""
    return Path(os.environ.get(KEY_FILE_ENV) or DEFAULT_KEY_FILE).expanduser()


def subject_key() -> bytes:
    """The secret pseudonymisation key (env ``USSSL_SUBJECT_KEY``, else the key file).

    Creates the key file (32 random bytes, mode 0600) on first use and logs where it is.

    Raises:
        DataError: the key file exists but is empty or unreadable.
    """
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode()
    path = key_file_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
            log.warning(
                "created a new subject key at %s: it turns patient ids into pseudonyms. Keep it "
                "safe and private, back it up with the source data, and reuse it for later "
                "ingests (or set %s)", path, KEY_ENV,
            )  # fmt: skip
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the subject key ({exc}); set {KEY_ENV}") from None
    if not key:
        raise DataError(f"{path}: the subject key file is empty; delete it or set {KEY_ENV}")
    return key


def pseudonym(value: str, key: bytes, kind: str = "subject") -> str:
    """16 hex characters of HMAC-SHA256(key, "usssl/<kind>/<value>").

    ``kind`` separates domains: a shard id and a subject id made from the same string differ.

    Example:
        >>> pseudonym("PID-0042", b"secret")  # doctest: +SKIP
        '3f0c9a...'
    """
    if not key:
        raise ValueError("the pseudonymisation key is empty")
    message = f"usssl/{kind}/{value}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]


def key_check(key: bytes) -> str:
    """A fingerprint that tells whether two caches used the same key, without revealing it."""
    return pseudonym("key-check", key, kind="check")
