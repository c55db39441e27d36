"""Training throughput of each pretraining method: usssl (LightningModule + trainer) vs a plain loop.

For every method (video_speech, order_transform, cvrl) the same module — a ResNet-18 per-frame
encoder on 112×112 frames, the method's heads, loss and augmentation — is trained twice on the
same pre-generated batches, from the same initial weights, with the same optimizer and gradient
clipping:

- **usssl**: ``trainer.fit`` with the Trainer of ``usssl.engine.trainer.build_trainer`` (MLflow
  callback on a temporary sqlite store, checkpoints, epoch seeding, no progress bar) and the
  method's own ``training_step`` (every loss term and embedding-health metric logged);
- **plain**: a hand-written ``for batch in loader`` loop computing the same loss from the
  module's parts (no logging, no diagnostics), ``zero_grad → backward → clip → step``.

Throughput is measured over the steps after ``--warmup`` (clips/s, one clip = one training item);
the rounds alternate plain / usssl so that load from other processes hits both alike, and the
table reports the median over rounds. The one-off cost of starting ``trainer.fit`` (and saving
its checkpoint) is reported separately. Writes ``benchmarks/results/train-cpu-2core.md``.

    python benchmarks/bench_train.py                      # 30 timed steps × 5 rounds: ~30 min on a 2-core CPU
    python benchmarks/bench_train.py --steps 4 --rounds 1 --out /tmp/bench.md   # quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

SIZE = 112  # frame side in pixels
ITEMS = {  # per method: batch size and what one training item holds
    "video_speech": (8, "1 frame + 4-frame order clip + 2 speech windows"),
    "order_transform": (4, "4-frame clip (siamese: shuffled, original, transformed)"),
    "cvrl": (4, "two 4-frame clips"),
}


def pretrain_config(method: str, encoder: str):
    from usssl.config import PretrainConfig

    extra = {
        "video_speech": {},  # the paper's full loss: infonce_hard + L_cls + L_ord
        "order_transform": {"order_transform": {"clip_frames": 4, "frame_stride": 8}},
        "cvrl": {"cvrl": {"clip_frames": 4, "stride": 2, "head_hidden_dim": 512}},
    }[method]
    return PretrainConfig.model_validate({"method": method, "encoder": {"name": encoder}, "projection_dim": 128,
                                          "optimizer": {"name": "adam", "lr": 1e-4}, **extra})


def make_module(method: str, pcfg, audio_rate: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # same initial weights for both loops
    if method == "video_speech":
        from usssl.methods.video_speech import VideoSpeechModule

        return VideoSpeechModule(pcfg, audio_rate=audio_rate)
    if method == "order_transform":
        from usssl.methods.order_transform import OrderTransformModule

        return OrderTransformModule(pcfg)
    from usssl.methods.cvrl import CVRLModule

    return CVRLModule(pcfg)


def make_batches(method: str, n: int, batch: int, audio_rate: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``n`` batches of random inputs in [0, 1] with the keys and shapes the method's dataset yields."""
    g = torch.Generator().manual_seed(seed)

    def video(frames: int) -> torch.Tensor:
        return torch.rand(batch, 1, frames, SIZE, SIZE, generator=g)  # (B, 1, T, H, W)

    out = []
    for _ in range(n):
        if method == "video_speech":
            window = int(0.6 * audio_rate)
            out.append({"video": video(1), "order_clip": video(4),
                        "audio": 0.1 * torch.randn(batch, window, generator=g),
                        "audio_hard_neg": 0.1 * torch.randn(batch, window, generator=g),
                        "affinity": torch.ones(batch)})
        elif method == "order_transform":
            out.append({"video": video(4)})
        else:
            out.append({"video_a": video(4), "video_b": video(4)})
    return out


def plain_loss(method: str, module) -> Callable[[dict], torch.Tensor]:
    """The method's loss computed directly from the module's parts: no logging, no diagnostics."""
    if method == "video_speech":
        from usssl.methods.self_paced import video_speech_contrastive

        cfg = module.cfg

        def loss(b):
            z_v, z_s = module.embed(b)
            z_n = module.embed_speech(b["audio_hard_neg"])
            gate = (b["affinity"] >= cfg.speech.affinity_threshold).float()
            per_pair = video_speech_contrastive(z_v, z_s, z_n, cfg.video_speech.contrastive, cfg.temperature, True)
            norm = gate.sum().clamp_min(1e-8)
            pairs = torch.cat([torch.cat([z_v, z_s], 1), torch.cat([z_v, z_n], 1)])
            target = torch.cat([torch.ones(len(z_v)), torch.zeros(len(z_v))]).long()
            cls = F.cross_entropy(module.correspondence(pairs), target, reduction="none")
            order_ce, _ = module.order_loss(b["order_clip"])
            return (per_pair * gate).sum() / norm + (cls * gate.repeat(2)).sum() / (2 * norm) + order_ce

        return loss
    if method == "order_transform":
        from usssl.methods.affine import normalise_params, sample_affine
        from usssl.methods.order import sample_orders

        def loss(b):
            clip = (module.augment(b["video"]) - 0.5) / 0.25
            perms, labels = sample_orders(len(clip), 4)
            params = sample_affine(len(clip), module.ranges)
            logits, pred, _ = module.tasks(clip, perms, params)
            return F.cross_entropy(logits, labels) + (pred - normalise_params(params, module.ranges)).pow(2).mean()

        return loss
    from usssl.methods.losses import nt_xent

    def loss(b):
        z_a, z_b = module.embed(b["video_a"], b["video_b"])
        return nt_xent(z_a, z_b, module.cv.temperature)

    return loss


def _now() -> tuple[float, float]:
    """(wall, this process's CPU) seconds."""
    return time.perf_counter(), time.process_time()


def run_plain(method: str, module, loader, warmup: int, clip: float | None) -> tuple[float, float]:
    """(wall, CPU) seconds per step after ``warmup`` steps of a hand-written loop."""
    opt = module.configure_optimizers()["optimizer"]
    compute = plain_loss(method, module)
    module.train()
    t0 = None
    for i, b in enumerate(loader):
        if i == warmup:
            t0 = _now()
        loss = compute(b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        opt.step()
    t1 = _now()
    return tuple((b - a) / (len(loader) - warmup) for a, b in zip(t0, t1))


def run_usssl(cfg, module, loader, warmup: int, tracker) -> tuple[tuple[float, float], float]:
    """((wall, CPU) seconds per step after ``warmup``, whole ``trainer.fit`` wall time), usssl's Trainer."""
    from lightning.pytorch.callbacks import Callback

    from usssl.engine.trainer import build_trainer

    marks: dict[str, tuple[float, float]] = {}

    class StepTimer(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                marks["t0"] = _now()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            marks["t1"] = _now()

    trainer = build_trainer(cfg, "pretrain", tracker, max_epochs=1, callbacks=[StepTimer()])
    start = time.perf_counter()
    trainer.fit(module, loader)
    total = time.perf_counter() - start
    n = len(loader) - warmup
    return tuple((b - a) / n for a, b in zip(marks["t0"], marks["t1"])), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--steps", type=int, default=32, help="training steps per run, warm-up included "
                        "(default: 30 timed steps, the robust setting of issue 19)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="alternating plain/usssl runs per method (≥ 5 for "
                        "a stated spread)")
    parser.add_argument("--methods", nargs="+", default=list(ITEMS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train-cpu-2core.md")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")

    import logging
    import warnings

    from torch.utils.data import DataLoader

    from usssl.config import PipelineConfig
    from usssl.engine.tracking import Tracker

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("USSSL_SUBJECT_KEY", "bench")
    torch.set_num_threads(os.cpu_count() or 1)
    load_before = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").is_file() else ["n/a"]
    audio_rate = 16000
    tmp = Path(tempfile.mkdtemp(prefix="usssl-bench-train-"))
    cfg = PipelineConfig.model_validate({"name": "bench_train", "output_dir": str(tmp), "trainer": {"progress": False},
                                         "stages": [{"evaluate": {}}]})
    tracker = Tracker(cfg)
    clip = cfg.trainer.gradient_clip_val
    rows = []
    with tracker.pipeline_run("bench_train"):
        for method in args.methods:
            batch, item = ITEMS[method]
            pcfg = pretrain_config(method, args.encoder)
            batches = make_batches(method, args.steps, batch, audio_rate, seed=0)
            loader = DataLoader(batches, batch_size=None, shuffle=False)
            plain, usssl, totals = [], [], []  # (wall, CPU) s/step per round
            for r in range(args.rounds):
                plain.append(run_plain(method, make_module(method, pcfg, audio_rate, 0), loader, args.warmup, clip))
                with tracker.stage(f"{method}-{r}"):
                    step, total = run_usssl(cfg, make_module(method, pcfg, audio_rate, 0), loader, args.warmup,
                                            tracker)
                usssl.append(step)
                totals.append(total - step[0] * (args.steps - args.warmup))  # start-up, warm-up steps, teardown
                print(f"{method} round {r}: plain {batch / plain[-1][0]:.2f} clips/s, usssl {batch / step[0]:.2f} "
                      f"clips/s (wall)", flush=True)
            row = [method, item, batch]
            for k in (0, 1):  # wall, CPU
                p, u = statistics.median(x[k] for x in plain), statistics.median(x[k] for x in usssl)
                row += [batch / p, batch / u, 100 * (u - p) / p]
            row.append(", ".join(f"{100 * (b[0] - a[0]) / a[0]:+.1f}" for a, b in zip(plain, usssl)))
            rows.append(row + [statistics.median(totals)])
    lines = [f"# usssl training throughput vs a plain PyTorch loop — {time.strftime('%Y-%m-%d')}", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, "
             f"threads {torch.get_num_threads()}. Encoder {args.encoder} per frame on {SIZE}×{SIZE} frames, "
             f"fp32, Adam, gradient clipping {clip}. {args.steps} steps per run, the first {args.warmup} "
             f"not timed; {args.rounds} alternating rounds, medians shown. Inputs are pre-generated random "
             "tensors, identical for both loops. Overhead = usssl step time / plain step time − 1. "
             f"Command: python benchmarks/bench_train.py --steps {args.steps} --warmup {args.warmup} --rounds "
             f"{args.rounds}. Load average before: {' '.join(load_before)}; after: "
             f"{' '.join(Path('/proc/loadavg').read_text().split()[:3]) if Path('/proc/loadavg').is_file() else 'n/a'}.",
             "",
             "| method | one clip (item) | batch | plain (clips/s) | usssl (clips/s) | overhead (wall) "
             "| overhead (CPU time) | wall overhead per round (%) | fit start-up + warm-up + teardown |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, item, b, p, u, ov, pc, uc, ovc, per_round, extra in rows:
        lines.append(f"| {m} | {item} | {b} | {p:.2f} | {u:.2f} | {ov:+.1f}% | {ovc:+.1f}% | {per_round} "
                     f"| {extra:.1f} s |")
    lines += ["", "Throughput is wall-clock. The machine is shared with other jobs, which slow both loops at "
              "random moments: the per-round column shows that spread, and the CPU-time overhead (this "
              "process's CPU seconds per step) is the steadier measure of the work usssl adds.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
