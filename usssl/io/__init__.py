"""Readers, one per source format, each returning a :class:`~usssl.io.recording.Recording`."""

from usssl.io.recording import Recording

__all__ = ["Recording"]
