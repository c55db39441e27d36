"""Tiny ultrasound-like videos for the io, privacy and data tests (a plain module, not a conftest).

Each scan is ``SIZE`` x ``SIZE`` at ``FPS``: a fan-shaped sector of speckle that changes every
frame, a bright blob moving inside it, static burned-in text below the fan (outside it), and an
AAC narration track of sine-tone bursts that starts ``AUDIO_DELAY`` seconds after the first frame.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd

FPS = 30
SIZE = 96
SECONDS = 2.0
AUDIO_RATE = 16000
AUDIO_DELAY = 0.25  # s: the audio stream starts this long after the first video frame
BURST_TIME = 1.0  # s (video time): a tone burst starts here in every scan
APEX, RADIUS, HALF_ANGLE = (48, 4), 68, np.deg2rad(40)
TEXT_BOX = (2, 78, 94, 95)  # x0, y0, x1, y1 of the burned-in text, below the fan
PLANES = ["background", "4ch", "abdomen"]


def fan_mask(height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """(H, W) bool sector: inside the radius and within +-HALF_ANGLE of straight down."""
    yy, xx = np.mgrid[:height, :width]
    dx, dy = xx - APEX[0], yy - APEX[1]
    return (np.hypot(dx, dy) <= RADIUS) & (np.abs(np.arctan2(dx, dy)) <= HALF_ANGLE) & (dy >= 0)


def fan_box() -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1), end-exclusive, of the fan."""
    ys, xs = np.nonzero(fan_mask())
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def blob_centre(i: int, fps: float = FPS) -> tuple[float, float]:
    """(x, y) pixel centre of the moving blob in frame ``i`` (always inside the fan)."""
    t = i / fps
    return 48.0 + 14.0 * np.sin(np.pi * t), 40.0 + 10.0 * np.cos(np.pi * t)


def render(n_frames: int, seed: int = 0, text: str = "PT 0042") -> np.ndarray:
    """(n, H, W) uint8 frames: per-frame speckle in the fan (spatially correlated, like ultrasound's:
    iid pixel noise is not speckle and reads as strokes), a moving blob, static text."""
    rng = np.random.default_rng(seed)
    mask = fan_mask()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    frames = np.zeros((n_frames, SIZE, SIZE), np.uint8)
    for i in range(n_frames):
        img = np.zeros((SIZE, SIZE), np.float32)
        speckle = cv2.GaussianBlur(rng.uniform(0, 1, (SIZE, SIZE)).astype(np.float32), (0, 0), 1.0)
        img[mask] = 40 + 70 * (speckle[mask] - speckle[mask].min()) / max(float(np.ptp(speckle[mask])), 1e-6)
        cx, cy = blob_centre(i)
        img += 180 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 3.0**2)) * mask
        img = np.clip(img, 0, 255).astype(np.uint8)
        cv2.putText(img, text, (4, 91), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1)
        frames[i] = img
    return frames


def tone_bursts(duration_s: float, rate: int = AUDIO_RATE, bursts=((BURST_TIME, 0.3),),
                start_s: float = 0.0, freq: float = 1000.0) -> np.ndarray:  # fmt: skip
    """(n,) float32 audio from ``start_s`` (video time) for ``duration_s``: silence + bursts."""
    t = start_s + np.arange(int(duration_s * rate)) / rate
    out = np.zeros_like(t)
    for begin, length in bursts:
        on = (t >= begin) & (t < begin + length)
        out[on] = 0.5 * np.sin(2 * np.pi * freq * t[on])
    return out.astype(np.float32)


def write_video(path: Path, frames: np.ndarray, fps: int = FPS, audio: np.ndarray | None = None,
                audio_rate: int = AUDIO_RATE, audio_start_s: float = 0.0,
                first_pts: int = 0) -> Path:  # fmt: skip
    """Encode (n, H, W) uint8 frames as H.264 (+ AAC mono ``audio`` starting at ``audio_start_s``);
    frame i is shown at (first_pts + i) / fps."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "10"})
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=audio_rate, layout="mono")
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="gray")
            frame.pts, frame.time_base = first_pts + i, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            start = int(round(audio_start_s * audio_rate))
            for k in range(0, len(audio), 1024):
                piece = audio[None, k : k + 1024].astype(np.float32)
                frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = audio_rate, start + k
                frame.time_base = Fraction(1, audio_rate)
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return path


def make_scan(path: Path, seed: int = 0, seconds: float = SECONDS, with_audio: bool = True) -> Path:
    """One fixture scan at ``path`` (audio starts ``AUDIO_DELAY`` s after the first frame)."""
    frames = render(int(seconds * FPS), seed=seed)
    audio = None
    if with_audio:
        audio = tone_bursts(seconds - AUDIO_DELAY, start_s=AUDIO_DELAY)
    return write_video(path, frames, audio=audio, audio_start_s=AUDIO_DELAY)


def patient(i: int) -> tuple[str, str]:
    """(patient_id, patient_name) of fixture subject ``i`` (fake PHI)."""
    return f"PID-93{i:02d}-QX", f"Zzyzx^Quillfeather{i}"


def make_corpus(root: Path, n_subjects: int = 3, seconds: float = SECONDS) -> dict:
    """A synthetic-corpus-shaped folder: videos/scan_XXX.mp4 + labels/gaze/subjects csv.

    Labels cycle through ``PLANES`` in thirds of each scan; gaze is the blob centre, absent on
    frames ``i % 10 == 4``. Returns {"root", "videos", "labels", "gaze", "subjects"}.
    """
    root = Path(root)
    n = int(seconds * FPS)
    labels, gaze, subjects, videos = [], [], [], []
    for s in range(n_subjects):
        stem = f"scan_{s:03d}"
        videos.append(make_scan(root / "videos" / f"{stem}.mp4", seed=s, seconds=seconds))
        pid, name = patient(s)
        subjects.append({"video": stem, "patient_id": pid, "patient_name": name})
        for i in range(n):
            plane = PLANES[min(3 * i // n, 2)]
            labels.append({"video": stem, "frame": i, "time_s": i / FPS, "plane": plane})
            if i % 10 != 4:
                x, y = blob_centre(i)
                gaze.append({"video": stem, "frame": i, "time_s": i / FPS, "x": x, "y": y})
    tables = {"labels": labels, "gaze": gaze, "subjects": subjects}
    for name, rows in tables.items():
        pd.DataFrame(rows).to_csv(root / f"{name}.csv", index=False)
    return {"root": root, "videos": videos, **{k: pd.DataFrame(v) for k, v in tables.items()}}
