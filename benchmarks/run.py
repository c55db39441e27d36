"""Speed of the walking skeleton's moving parts, on this machine (`make bench`).

Measures synthetic-corpus generation, ingest, cache reads (frames and audio-visual pairs) and
the video–speech training step, and writes a Markdown table to ``benchmarks/results/<host>.md``.
Numbers are for comparison between versions on the same machine; tests never assert times.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch


def timed(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    from torch.utils.data import DataLoader

    from usssl.config import IngestConfig, PretrainConfig
    from usssl.data.cache import Cache
    from usssl.data.datasets import AudioVisualDataset, FrameDataset
    from usssl.data.ingest import ingest
    from usssl.data.synth import generate
    from usssl.methods.video_speech import VideoSpeechModule

    os.environ.setdefault("USSSL_SUBJECT_KEY", "bench")
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="usssl-bench-"))
    try:
        subjects, duration = 4, 40.0
        t = timed(lambda: generate(tmp / "synth", subjects=subjects, seed=0, duration_s=duration))
        frames = subjects * duration * 30
        rows.append(("synth: generate 4 × 40 s scans (160×160, 30 fps, MP4 + DICOM)", f"{t:.1f} s",
                     f"{frames / t:.0f} frames/s"))
        cfg = IngestConfig(size=(64, 64), fps=15, workers=2)
        t = timed(lambda: ingest([tmp / "synth"], tmp / "cache", cfg, progress=False))
        rows.append(("ingest: 4 MP4s → cache (2 workers, 64×64, 15 fps)", f"{t:.1f} s", f"{frames / t:.0f} source frames/s"))
        cache = Cache(tmp / "cache")
        frames_ds = FrameDataset(cache, cache.shard_ids(), stride=1)
        n = min(2000, len(frames_ds))
        t = timed(lambda: [frames_ds[i] for i in range(0, n)])
        rows.append(("cache: read labelled frames", f"{t / n * 1e6:.0f} µs/frame", f"{n / t:.0f} frames/s"))
        av = AudioVisualDataset(cache, cache.shard_ids(), split=None, pairs_per_epoch=512)
        t = timed(lambda: [av[i] for i in range(512)])
        rows.append(("cache: draw frame–speech pairs", f"{t / 512 * 1e6:.0f} µs/pair", f"{512 / t:.0f} pairs/s"))
        module = VideoSpeechModule(PretrainConfig(), audio_rate=int(cache.settings["audio_rate"]))
        opt = module.configure_optimizers()["optimizer"]
        batch = next(iter(DataLoader(av, batch_size=64)))
        module.log = lambda *a, **k: None  # outside a Trainer

        def step() -> None:
            opt.zero_grad()
            module.training_step(batch, 0).backward()
            opt.step()

        step()
        t = timed(step, repeat=5)
        rows.append(("pretrain: video–speech step, batch 64, tiny encoders (CPU)", f"{t * 1000:.0f} ms/step",
                     f"{64 / t:.0f} pairs/s"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    host = platform.node() or "host"
    lines = [f"# usssl benchmarks — {time.strftime('%Y-%m-%d')}", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), torch "
             f"{torch.__version__}, threads {torch.get_num_threads()}", "",
             "| what | time | throughput |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    out = Path(__file__).parent / "results" / "cpu-2core.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {out} (host {host})")


if __name__ == "__main__":
    main()
