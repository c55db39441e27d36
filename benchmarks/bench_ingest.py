"""Ingest speed, clip-read speed and ingest memory, on the same files in one run.

    python benchmarks/bench_ingest.py            # writes benchmarks/results/ingest-cpu-2core.md

1. Ingest frames/s (source frames / wall time, 1 and 2 workers, default settings: 64 x 64, 15 fps)
   against plain PyAV decoding of the same files (every frame to a grey ndarray, one process,
   FFmpeg threads on). Files: the 110 lung POCUS clips of ../shared/realdata when present, else
   a synthetic corpus. Goal: ingest >= 0.7x the raw decode rate with one worker.
2. 16-frame clips/s read from the cache (a memmap slice) against decoding each clip from its
   video by seeking to the nearest keyframe and decoding forward. Goal: >= 20x.
3. Peak memory (max RSS, ``resource.getrusage`` in a fresh subprocess, one worker; measured first,
   while this process is small) while ingesting 10-minute synthetic scans against 1-minute ones.
   Goal: roughly flat, under 1 GB.

Numbers compare versions on one machine; tests never assert times. On a shared machine the load
average is written beside them.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import av
import numpy as np
import pandas as pd
from av.video.reformatter import VideoReformatter

REPO = Path(__file__).resolve().parents[1]
LUNG = REPO.parent / "shared" / "realdata" / "covid19_ultrasound_lung_pocus"
RESULT = REPO / "benchmarks" / "results" / "ingest-cpu-2core.md"
CLIP = 16


def corpus(tmp: Path) -> tuple[str, Path, list[Path]]:
    """(description, source folder, video files)."""
    if (LUNG / "videos").is_dir():
        files = sorted(p for p in (LUNG / "videos").rglob("*") if p.is_file())
        return f"{len(files)} lung POCUS clips (../shared/realdata)", LUNG / "videos", files
    from usssl.data.synth import generate

    src = generate(tmp / "synth", subjects=8, seed=0, duration_s=30.0, size=(240, 320), write_dicom=False)
    files = sorted((src / "videos").glob("*.mp4"))
    return f"{len(files)} synthetic 30 s scans, 320 x 240 (real data absent)", src, files


def raw_decode(files: list[Path], to_array: bool = True) -> int:
    """Decode every frame of every file (to a grey ndarray through one reused scaler, as ingest
    needs; ``frame.to_ndarray(format="gray")`` builds a scaler per frame and is ~2x slower on
    large clips, which would flatter ingest); returns the frame count."""
    n = 0
    for path in files:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            scaler = VideoReformatter()
            for frame in container.decode(stream):
                if to_array:
                    scaler.reformat(frame, format="gray").to_ndarray()
                n += 1
    return n


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def seek_clip(path: Path, start_s: float) -> np.ndarray:
    """(16, H, W) grey frames from ``start_s``: seek to the keyframe before it, decode forward."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base = float(stream.time_base)
        container.seek(int(start_s / base) + (stream.start_time or 0), stream=stream, backward=True)
        frames = []
        for frame in container.decode(stream):
            if frame.pts is not None and (frame.pts - (stream.start_time or 0)) * base < start_s - 1e-6:
                continue
            frames.append(frame.to_ndarray(format="gray"))
            if len(frames) == CLIP:
                break
        return np.stack(frames)


def clip_rates(cache_dir: Path, files: list[Path], n_cache: int = 2000, n_video: int = 100) -> tuple[float, float]:
    """(clips/s from the cache, clips/s decoded from the videos by seeking), random clips."""
    from usssl.data.cache import Cache
    from usssl.io.video import read_video

    rng = random.Random(0)
    cache = Cache(cache_dir)
    shards = [cache.shard(s) for s in cache.shard_ids() if len(cache.shard(s)) >= CLIP]
    picks = [(s, rng.randrange(len(s) - CLIP + 1)) for s in rng.choices(shards, k=n_cache)]
    clips, t_cache = timed(lambda: [np.array(s.frames[k : k + CLIP]) for s, k in picks])
    assert all(c.shape[0] == CLIP for c in clips)
    durations = {p: read_video(p, audio=False) for p in files}
    # starts at least 2 clips before the end: near the end of some streams (GIFs, MPEG-PS with
    # B-frames) fewer frames decode than packets were counted, and the clip would come back short
    long_enough = [p for p, rec in durations.items() if rec.n_frames >= 3 * CLIP]
    vpicks = []
    for path in rng.choices(long_enough, k=n_video):
        rec = durations[path]
        vpicks.append((path, float(rec.timestamps[rng.randrange(rec.n_frames - 2 * CLIP)])))
    vclips, t_video = timed(lambda: [seek_clip(p, t) for p, t in vpicks])
    assert all(len(c) == CLIP for c in vclips)
    return n_cache / t_cache, n_video / t_video


GENERATE_SCRIPT = """
import sys
from pathlib import Path
from usssl.data.synth import generate
generate(Path(sys.argv[1]), subjects=2, seed=1, duration_s=float(sys.argv[2]), size=(160, 160), write_dicom=False)
"""
PEAK_SCRIPT = """
import os, resource, sys
from pathlib import Path
os.environ.setdefault("USSSL_SUBJECT_KEY", "bench")
from usssl.config import IngestConfig
from usssl.data.ingest import ingest
ingest([Path(sys.argv[1])], Path(sys.argv[2]), IngestConfig(workers=1), progress=False)
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, hwm[0] if hwm else -1)  # KiB on Linux
"""


def peak_rss_mib(minutes: float, tmp: Path) -> tuple[float, float, int]:
    """(max RSS and VmHWM in MiB of a fresh process ingesting two ``minutes``-long synthetic scans,
    source frames). The corpus is written by another process and this one stays small: a child's
    ``ru_maxrss`` starts from its parent's RSS at the fork, so a big parent would inflate it."""
    src, out_dir = tmp / f"long{minutes:g}", tmp / f"memory-cache-{minutes:g}min"
    subprocess.run([sys.executable, "-c", GENERATE_SCRIPT, str(src), str(60.0 * minutes)], check=True,
                   capture_output=True)  # fmt: skip
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(src), str(out_dir)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the memory run failed:\n{out.stderr[-3000:]}")
    maxrss, hwm = (int(v) / 1024.0 for v in out.stdout.split()[-2:])
    frames = int(json.loads((src / "corpus.json").read_text()).get("fps", 30) * 60 * minutes * 2)
    shutil.rmtree(src, ignore_errors=True)
    return maxrss, hwm, frames


def main() -> None:
    os.environ.setdefault("USSSL_SUBJECT_KEY", "bench")
    from usssl.config import IngestConfig
    from usssl.data.ingest import ingest

    tmp = Path(tempfile.mkdtemp(prefix="usssl-bench-ingest-"))
    rows: list[tuple[str, str, str, str]] = []

    def row(what: str, result: str, detail: str, goal: str = "") -> None:
        rows.append((what, result, detail, goal))
        print(" | ".join(rows[-1]), flush=True)

    try:
        for minutes in (1, 10):  # first, while this process is small (see peak_rss_mib)
            maxrss, hwm, frames = peak_rss_mib(minutes, tmp)
            row(f"peak RSS, ingesting 2 × {minutes}-min synthetic scans (160×160, 30 fps)", f"{maxrss:.0f} MiB",
                f"{frames} source frames, 1 worker; VmHWM {hwm:.0f} MiB", "flat, < 1 GB")
        what, src, files = corpus(tmp)
        load0 = os.getloadavg()[0]
        n_dec, t_dec = timed(lambda: raw_decode(files, to_array=False))
        row("PyAV decode only (no pixel conversion; for reference)", f"{n_dec / t_dec:.0f} frames/s",
            f"{n_dec} frames in {t_dec:.1f} s")
        n_raw, t_raw = timed(lambda: raw_decode(files))
        raw = n_raw / t_raw
        row("**raw**: plain PyAV decode to grey ndarrays (1 process, FFmpeg threads)", f"{raw:.0f} frames/s",
            f"{n_raw} frames in {t_raw:.1f} s", "baseline")
        for workers in (1, 2):
            cfg = IngestConfig(workers=workers)  # 64 x 64, 15 fps, crop auto, audio kept
            summary, t = timed(lambda: ingest([src], tmp / f"cache{workers}", cfg, progress=False))
            n = int(pd.read_csv(summary.report_path)["frames"].fillna(0).sum())
            row(f"ingest, {workers} worker(s) (64×64, 15 fps)", f"{n / t:.0f} frames/s",
                f"{n / t / raw:.2f}× raw; {summary.n_ok} ok, {summary.n_failed} failed, {t:.1f} s",
                "≥ 0.7× raw" if workers == 1 else "faster than 1 worker")
        from_cache, from_video = clip_rates(tmp / "cache1", files)
        row("16-frame clips read from the cache", f"{from_cache:.0f} clips/s", "memmap slice, random clips")
        row("16-frame clips decoded from the video (seek + decode)", f"{from_video:.1f} clips/s",
            f"cache is {from_cache / from_video:.0f}× faster", "≥ 20×")
        load1 = os.getloadavg()[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [f"# Ingest benchmark — {date.today().isoformat()}", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), PyAV {av.__version__}; load average "
             f"{load0:.1f} before and {load1:.1f} after the speed runs (a shared machine: other jobs ran "
             "beside this one).", f"Files: {what}.", "",
             "| measure | result | detail | goal |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "Ingest runs the full per-recording pipeline (colour probe, imaging-region and static-overlay "
              "detection on 60 sampled full-resolution frames, crop, resize, frozen/Doppler flags, audio, VAD) "
              "and writes the shards; raw decode only decodes."]  # fmt: skip
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {RESULT}")


if __name__ == "__main__":
    main()
