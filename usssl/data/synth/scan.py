"""One synthetic fetal scan: plane schedule, frames, narration, gaze and fake PHI.

Every random draw comes from ``numpy.random.SeedSequence([seed, subject_index])``, split into one
stream per concern (PHI, appearance, plane schedule + poses, narration, gaze, which words name the
plane), so that subject k is the same whatever the number of subjects, the voice and the naming
never change the frames, and the frame size changes neither the plane schedule nor the narration.

    >>> scan = render_scan(0, seed=0, duration_s=8, size=(96, 96))
    >>> scan.frames.shape, scan.labels.shape, scan.audio.shape   # (240, 96, 96), (240,), (128000,)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import cv2
import numpy as np

from usssl.data.synth.anatomy import PLANES, draw_template
from usssl.data.synth.render import (FanGeometry, Pose, Segment, fan_geometry, make_look,
                                     render_segments)
from usssl.data.synth.voice import speak

_SURNAMES = ("Doe", "Roe", "Poe", "Moe", "Smithe", "Jonesy", "Brownley", "Nobody", "Example",
             "Placeholder", "Sample", "Testwood", "Mockford", "Fakeley", "Dummett", "Specimen")
_GIVEN = ("Jane", "Mary", "Anna", "Sara", "Lena", "Ines", "Maya", "Nora", "Iris", "Ada", "Zoe",
          "Elsa", "Rita", "Vera", "Lina", "Mila")
_HOSPITALS = ("Synthetic General Hospital", "Nowhere Maternity Unit", "Example Women's Clinic")


@dataclass(frozen=True)
class SubjectInfo:
    """Invented patient identity of one scan (fake PHI, for testing de-identification)."""

    patient_id: str
    patient_name: str
    birth_date: str  # YYYYMMDD
    study_date: str  # YYYYMMDD
    institution: str


FILLER_WORDS: tuple[str, ...] = ("okay", "now", "so", "right", "just", "here", "good", "and", "let's see",
                                  "moving", "hold on", "there")
"""What the sonographer says when a word does not name the plane (``naming_fraction`` < 1)."""

UNNAMED: tuple[str, ...] = ("filler", "silence")
"""What replaces a word that does not name the plane: another word, or nothing."""


@dataclass(frozen=True)
class SpokenWord:
    """One word of the narration (the plane's name, or a filler word), spoken from ``start_s`` to ``end_s``."""

    start_s: float
    end_s: float
    word: str


@dataclass
class ScanData:
    """Raw arrays of one scan (before encoding).

    Attributes:
        frames: uint8 (T, H, W) B-mode frames with burned-in text outside the fan.
        audio: float32 (N,) mono narration at ``audio_rate``, sample 0 at frame 0's time,
            quantised to 16-bit steps.
        labels: int64 (T,) plane index into ``PLANES`` per frame (transitions are 0 = background).
        gaze: float32 (T, 2) x, y in frame pixels; NaN while the sonographer looks away.
        masks: uint8 (T, H, W) anatomy mask, non-empty exactly where ``labels > 0``.
        words: spoken words in time order.
        text_box: (x0, y0, x1, y1) end-exclusive box of the burned-in text.
    """

    name: str
    frames: np.ndarray
    audio: np.ndarray
    labels: np.ndarray
    gaze: np.ndarray
    masks: np.ndarray
    words: list[SpokenWord]
    subject: SubjectInfo
    fan: FanGeometry
    text_box: tuple[int, int, int, int]
    fps: int
    audio_rate: int


def _subject_info(rng: np.random.Generator) -> SubjectInfo:
    study = dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 1800)))
    birth = study - dt.timedelta(days=int(rng.integers(20 * 365, 42 * 365)))
    name = f"{rng.choice(_SURNAMES)}^{rng.choice(_GIVEN)}"
    return SubjectInfo(f"PAT-{rng.integers(10000, 100000)}", name, birth.strftime("%Y%m%d"),
                       study.strftime("%Y%m%d"), str(rng.choice(_HOSPITALS)))


def _schedule(rng: np.random.Generator, fan: FanGeometry, n_frames: int, fps: int,
              margin: int) -> list[Segment]:
    """Segments of 2–5 s sweeping the planes in a random order, background in between."""
    size_scale = rng.uniform(0.9, 1.1)  # gestational age
    order = list(rng.permutation(np.arange(1, len(PLANES))))
    segments: list[Segment] = []
    start, last = 0, -1
    plane = 0 if rng.random() < 0.5 else order.pop(0)
    while start < n_frames:
        stop = min(n_frames, start + int(round(rng.uniform(2.0, 5.0) * fps)))
        template = draw_template(PLANES[plane], rng)
        n_tr = max(1, int(round(rng.uniform(0.2, 0.4) * fps))) if segments else 0
        pose = Pose.draw(template, fan, size_scale, rng)
        speckle, offset = int(rng.integers(4)), rng.integers(0, 2 * margin + 1, 2)
        segments.append(Segment(int(plane), start, stop, n_tr, template, pose, speckle,
                                (int(offset[0]), int(offset[1]))))
        start, last = stop, plane
        if not order:
            order = list(rng.permutation(np.arange(1, len(PLANES))))
        plane = 0 if (last != 0 and rng.random() < 0.35) else order.pop(0)
    return segments


def _narrate(rng: np.random.Generator, segments: list[Segment], n_samples: int, fps: int,
             rate: int, voice: str, speak_fraction: float, naming_fraction: float = 1.0,
             unnamed: str = "filler", rng_name: np.random.Generator | None = None,
             ) -> tuple[np.ndarray, list[SpokenWord]]:
    """Narration (N,) float32: a word in ~``speak_fraction`` of the plane segments (always after the
    cross-fade and ≥ 0.15 s inside the segment), low noise elsewhere. A word names the plane on
    screen with probability ``naming_fraction`` (drawn from ``rng_name``); otherwise it is a filler
    word (``unnamed: filler``) or nothing (``silence``)."""
    audio = (0.002 * rng.standard_normal(n_samples)).astype(np.float64)
    pitch = rng.uniform(0.85, 1.2)  # the sonographer's voice
    words: list[SpokenWord] = []
    for seg in segments:
        if seg.plane == 0 or rng.random() >= speak_fraction:
            continue
        cursor, hi = (seg.start + seg.n_transition) / fps + 0.15, seg.stop / fps - 0.15
        for _ in range(2 if rng.random() < 0.25 else 1):
            word = PLANES[seg.plane]
            if naming_fraction < 1.0 and rng_name is not None and rng_name.random() >= naming_fraction:
                word = FILLER_WORDS[int(rng_name.integers(len(FILLER_WORDS)))] if unnamed == "filler" else ""
            wave = speak(word or PLANES[seg.plane], rate, voice, pitch) * rng.uniform(0.08, 0.15)
            dur = len(wave) / rate
            if cursor + dur > hi:
                break
            i0 = int(round(rng.uniform(cursor, min(hi - dur, cursor + 1.0)) * rate))
            i1 = min(n_samples, i0 + len(wave))
            if word:  # silence: the time passes, nothing is said
                audio[i0:i1] += wave[: i1 - i0]
                words.append(SpokenWord(i0 / rate, i1 / rate, word))
            cursor = i1 / rate + rng.uniform(0.2, 0.6)
    for seg in segments:  # non-speech bursts (probe knocks, rustle), never over a word
        if rng.random() >= 0.15:
            continue
        n = int(rng.uniform(0.05, 0.25) * rate)
        t0 = seg.start / fps
        i0 = int(rng.uniform(t0, max(t0, seg.stop / fps - n / rate)) * rate)
        if any(w.start_s - 0.05 < (i0 + n) / rate and i0 / rate < w.end_s + 0.05 for w in words):
            continue
        burst = np.cumsum(rng.standard_normal(n))  # brown noise: low-pitched rumble
        burst = (burst - np.linspace(burst[0], burst[-1], n)) * np.hanning(n)
        audio[i0 : i0 + n] += rng.uniform(0.01, 0.03) * burst / (burst.std() + 1e-12)
    audio = np.round(np.clip(audio, -1, 1) * 32767) / 32767  # 16-bit PCM steps
    return audio.astype(np.float32), words


def _gaze(rng: np.random.Generator, segments: list[Segment], affines: np.ndarray,
          size: tuple[int, int], fps: int) -> np.ndarray:
    """(T, 2) gaze: 200–400 ms fixations on anatomy keypoints that follow the probe motion,
    1–2-frame saccades between them, looser fixations and look-aways (NaN) on background."""
    h, w = size
    gaze = np.full((affines.shape[0], 2), np.nan, np.float32)
    prev: np.ndarray | None = None
    for seg in segments:
        f = seg.start
        while f < seg.stop:
            n = min(seg.stop - f, max(2, int(round(rng.uniform(0.2, 0.4) * fps))))
            if seg.plane == 0 and rng.random() < 0.15:  # looks away from the screen
                n = min(seg.stop - f, max(1, int(round(rng.uniform(0.3, 1.0) * fps))))
                f, prev = f + n, None
                continue
            kp = seg.template.keypoints[rng.integers(len(seg.template.keypoints))]
            spread = 0.05 if seg.plane == 0 else 0.008
            aff = affines[f : f + n]
            pts = np.einsum("nij,j->ni", aff[:, :, :2], kp) + aff[:, :, 2]  # (n, 2)
            pts += rng.normal(0, spread * h, 2) + rng.normal(0, 0.003 * h, (n, 2))
            if prev is not None:  # saccade from the previous fixation
                n_sac = min(n - 1, int(rng.integers(1, 3)))
                for k in range(n_sac):
                    pts[k] = prev + (pts[n_sac] - prev) * (k + 1) / (n_sac + 1)
            gaze[f : f + n] = pts
            f, prev = f + n, pts[-1]
    gaze[:, 0] = np.clip(gaze[:, 0], 0, w - 1)
    gaze[:, 1] = np.clip(gaze[:, 1], 0, h - 1)
    return gaze


def burned_in_text(lines: list[str],
                   fan: FanGeometry) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """uint8 (H, W) layer of ``lines`` written in the top-left corner, outside the fan, and its
    end-exclusive box (x0, y0, x1, y1). The font shrinks until no text pixel touches the fan."""
    outside = cv2.dilate(fan.mask().astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
    scale = fan.height / 360.0
    while True:
        layer = np.zeros((fan.height, fan.width), np.uint8)
        y = 1
        for line in lines:
            (tw, th), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_PLAIN, scale, 1)
            y += th + 1
            cv2.putText(layer, line, (1, y), cv2.FONT_HERSHEY_PLAIN, scale, 220, 1, cv2.LINE_AA)
            y += base
        if not (layer > 0)[~outside].any() or scale < 0.1:
            break
        scale *= 0.9
    ys, xs = np.nonzero(layer)
    return layer, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def render_scan(subject_index: int, seed: int = 0, voice: str = "builtin", duration_s: float = 40.0,
                fps: int = 30, size: tuple[int, int] = (160, 160), audio_rate: int = 16000,
                speak_fraction: float = 0.6, naming_fraction: float = 1.0, unnamed: str = "filler") -> ScanData:
    """Render subject ``subject_index`` of the corpus drawn from ``seed``.

    Args:
        size: (height, width) of the frames in pixels.
        speak_fraction: probability that the sonographer speaks during a plane segment.
        naming_fraction: probability that a spoken word names the plane on screen (1: always, the
            speech is then a label channel); the others are filler words or silence (``unnamed``).

    Returns:
        ScanData with T = round(duration_s · fps) frames and N = round(T / fps · audio_rate)
        audio samples.
    """
    streams = np.random.SeedSequence([int(seed), int(subject_index)]).spawn(6)  # the first 5 as before
    rng_phi, rng_look, rng_plan, rng_audio, rng_gaze, rng_name = (np.random.default_rng(s) for s in streams)
    n_frames = int(round(duration_s * fps))
    fan = fan_geometry(size)
    subject = _subject_info(rng_phi)
    look = make_look(fan, rng_look)
    segments = _schedule(rng_plan, fan, n_frames, fps, look.margin)
    frames, masks, affines = render_segments(segments, fan, look, fps, n_frames)
    labels = np.zeros(n_frames, np.int64)
    for seg in segments:
        labels[seg.start + seg.n_transition : seg.stop] = seg.plane
    study = dt.datetime.strptime(subject.study_date, "%Y%m%d").strftime("%d/%m/%Y")
    name = subject.patient_name.replace("^", ", ").upper()
    layer, box = burned_in_text([name, subject.patient_id, study], fan)
    np.maximum(frames, layer[None], out=frames)
    audio, words = _narrate(rng_audio, segments, int(round(n_frames / fps * audio_rate)), fps,
                            audio_rate, voice, speak_fraction, naming_fraction, unnamed, rng_name)
    gaze = _gaze(rng_gaze, segments, affines, size, fps)
    return ScanData(f"scan_{subject_index:03d}", frames, audio, labels, gaze, masks, words, subject,
                    fan, box, fps, audio_rate)
