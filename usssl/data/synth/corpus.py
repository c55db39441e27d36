"""The built-in synthetic fetal-ultrasound corpus (``usssl synth --out DIR``).

A deterministic stand-in for fetal screening video with narration, gaze and labels, small enough
to run every pipeline end to end on a laptop. Each subject has one scan that sweeps through
standard planes (segments of 2–5 s, cross-faded over 0.2–0.4 s) under a moving probe; the
sonographer speaks in ~60 % of the plane segments, and each word names the plane on screen with
probability ``naming_fraction`` (default 1; otherwise a filler word, or silence). Layout and fields: docs/architecture.md
("Synthetic corpus") and data_cards/synthetic_fetal.md.

Transition frames (the cross-fade into a segment) are labelled ``background`` and have an empty
anatomy mask; look-away gaze samples have empty x, y in gaze.csv (NaN).

    >>> generate(Path("synth"), subjects=3, duration_s=8)      # writes the corpus, returns the path
    >>> scan = render_scan(0, seed=0)                          # raw arrays of subject 0
"""

from __future__ import annotations

import csv
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from usssl.data.synth.anatomy import PLANES
from usssl.data.synth.render import FanGeometry, fan_geometry
from usssl.data.synth.scan import UNNAMED, ScanData, SpokenWord, SubjectInfo, render_scan
from usssl.engine.progress import progress as progress_bar
from usssl.errors import ConfigError
from usssl.data.synth.voice import VOICES, speak

__all__ = ["PLANES", "ScanData", "SpokenWord", "SubjectInfo", "FanGeometry", "fan_geometry",
           "generate", "render_scan", "DEPTH_CM"]

log = logging.getLogger(__name__)

DEPTH_CM = 12.0
"""Imaging depth represented by the frame height; pixel spacing = DEPTH_CM / height (cm)."""

_LABEL_FIELDS = ("video", "frame", "time_s", "plane")
_SPEECH_FIELDS = ("video", "start_s", "end_s", "word")
_GAZE_FIELDS = ("video", "frame", "time_s", "x", "y")
_SUBJECT_FIELDS = ("video", "patient_id", "patient_name")


def _check(subjects: int, voice: str, duration_s: float, fps: int, size: tuple[int, int],
           audio_rate: int, speak_fraction: float, naming_fraction: float = 1.0, unnamed: str = "filler") -> None:
    """Raise ConfigError naming the first wrong argument."""
    if subjects < 1:
        raise ConfigError(f"synth: subjects must be >= 1, got {subjects}.")
    if voice not in VOICES:
        raise ConfigError(f"synth: voice must be one of {', '.join(VOICES)}, got {voice!r}.")
    if duration_s * fps < 2:
        raise ConfigError(f"synth: duration_s · fps must give >= 2 frames, got {duration_s} s.")
    if len(size) != 2 or min(size) < 48 or size[0] % 2 or size[1] % 2:
        raise ConfigError(f"synth: size is (height, width), even, of at least 48 px; got {size}.")
    if audio_rate < 8000:
        raise ConfigError(f"synth: audio_rate must be >= 8000 Hz, got {audio_rate}.")
    if not 0.0 <= speak_fraction <= 1.0:
        raise ConfigError(f"synth: speak_fraction must be in [0, 1], got {speak_fraction}.")
    if not 0.0 <= naming_fraction <= 1.0:
        raise ConfigError(f"synth: naming_fraction must be in [0, 1], got {naming_fraction}.")
    if unnamed not in UNNAMED:
        raise ConfigError(f"synth: unnamed must be one of {', '.join(UNNAMED)}, got {unnamed!r}.")
    if voice == "espeak":
        speak("femur", audio_rate, voice)  # fails early, with a DataError, without espeak-ng


def _write_subject(out: Path, k: int, seed: int, settings: dict, write_dicom: bool) -> dict:
    """Render subject ``k``, write its MP4, mask and DICOM; return its CSV rows."""
    from usssl.data.synth.write import write_dicom as _write_dicom, write_mp4

    scan = render_scan(k, seed, **settings)
    write_mp4(out / "videos" / f"{scan.name}.mp4", scan.frames, scan.audio, scan.fps,
              scan.audio_rate)
    np.savez_compressed(out / "masks" / f"{scan.name}.npz", masks=scan.masks)
    if write_dicom:
        spacing_cm = DEPTH_CM / scan.frames.shape[1]
        _write_dicom(out / "dicom" / f"{scan.name}.dcm", scan, seed, spacing_cm)
    fps, v = scan.fps, scan.name
    times = [f"{i / fps:.6f}" for i in range(len(scan.labels))]
    fmt = lambda x: "" if np.isnan(x) else f"{x:.2f}"  # noqa: E731
    return {
        "labels": [(v, i, times[i], PLANES[p]) for i, p in enumerate(scan.labels)],
        "speech": [(v, f"{w.start_s:.6f}", f"{w.end_s:.6f}", w.word) for w in scan.words],
        "gaze": [(v, i, times[i], fmt(x), fmt(y)) for i, (x, y) in enumerate(scan.gaze)],
        "subjects": [(v, scan.subject.patient_id, scan.subject.patient_name)],
        "text_box": scan.text_box,
    }


def _write_csv(path: Path, fields: tuple[str, ...], rows: list[tuple]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(fields)
        writer.writerows(rows)


def generate(out: Path, subjects: int = 12, seed: int = 0, voice: str = "builtin",
             duration_s: float = 40.0, fps: int = 30, size: tuple[int, int] = (160, 160),
             audio_rate: int = 16000, write_dicom: bool = True, progress: bool = False,
             speak_fraction: float = 0.6, workers: int | None = None, naming_fraction: float = 1.0,
             unnamed: str = "filler") -> Path:
    """Write the synthetic corpus to ``out`` (layout: docs/architecture.md) and return ``out``.

    Args:
        out: output folder (created; existing files of the same names are overwritten).
        subjects: number of scans, ``scan_000`` … (subject k is the same whatever this number).
        seed: corpus seed; same arguments ⇒ identical frames, audio PCM, masks and CSVs.
        voice: "builtin" (synthetic, deterministic) or "espeak" (needs the espeak-ng binary).
        duration_s, fps: scan length; T = round(duration_s · fps) frames per scan.
        size: (height, width) of the frames in pixels.
        audio_rate: narration sample rate in Hz (mono).
        write_dicom: also write dicom/scan_XXX.dcm (Ultrasound Multi-frame, invented PHI).
        progress: show a rich progress bar.
        speak_fraction: probability that the sonographer speaks during a plane segment.
        workers: subjects rendered in parallel threads (default: up to 4, CPU count).
        naming_fraction: probability that a spoken word names the plane on screen; 1: speech is a
            label channel, lower: less anatomy in the speech.
        unnamed: what the other words are: ``filler`` (words that name no plane) or ``silence``.
    """
    size = (int(size[0]), int(size[1]))
    _check(subjects, voice, duration_s, fps, size, audio_rate, speak_fraction, naming_fraction, unnamed)
    out = Path(out)
    for sub in ("videos", "masks") + (("dicom",) if write_dicom else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    settings = {"voice": voice, "duration_s": duration_s, "fps": fps, "size": size,
                "audio_rate": audio_rate, "speak_fraction": speak_fraction, "naming_fraction": naming_fraction,
                "unnamed": unnamed}
    workers = workers or max(1, min(4, os.cpu_count() or 1, subjects))
    log.info("writing %d synthetic scans to %s (%d worker threads)", subjects, out, workers)

    def job(k: int) -> dict:
        return _write_subject(out, k, seed, settings, write_dicom)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(job, k) for k in range(subjects)]
        with progress_bar("synthetic scans", subjects, progress, transient=True) as bar:
            for fut in futures:
                fut.result()
                bar.advance()
        results = [fut.result() for fut in futures]

    for name, fields in (("labels", _LABEL_FIELDS), ("speech", _SPEECH_FIELDS),
                         ("gaze", _GAZE_FIELDS), ("subjects", _SUBJECT_FIELDS)):
        _write_csv(out / f"{name}.csv", fields, [row for r in results for row in r[name]])
    n_frames = int(round(duration_s * fps))
    meta = {
        "synthetic": True,
        "generator": "usssl.data.synth",
        "usssl_version": _version(),
        "seed": seed, "subjects": subjects, "voice": voice, "duration_s": duration_s, "fps": fps,
        "size": list(size), "height": size[0], "width": size[1], "audio_rate": audio_rate,
        "speak_fraction": speak_fraction, "naming_fraction": naming_fraction, "unnamed": unnamed,
        "write_dicom": write_dicom,
        "n_frames": n_frames, "n_audio_samples": int(round(n_frames / fps * audio_rate)),
        "planes": list(PLANES),
        "transition_label": "background",
        "fan": fan_geometry(size).as_dict(),
        "pixel_spacing_cm": DEPTH_CM / size[0],
        "burned_in_text_box": {f"scan_{k:03d}": list(r["text_box"]) for k, r in enumerate(results)},
        "videos": [f"scan_{k:03d}" for k in range(subjects)],
        "gaze_missing": "empty x, y in gaze.csv: the sonographer looks away (NaN)",
    }
    (out / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("synthetic corpus ready: %s", out)
    return out


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("usssl")
    except Exception:  # not installed (running from a checkout)
        return "0+unknown"
