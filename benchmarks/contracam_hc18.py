"""ContraCAM on real fetal-head stills (HC18 subset in ../shared/realdata): mask IoU, box IoU and the
pointing game against the head annotations, through the usssl cache.

1. ``usssl.data.ingest`` reads ``hc18_fetal_head/training_set``: 60 PNG stills, one-frame recordings,
   each ``<stem>_Annotation.png`` (the head ellipse, filled) cached as its anatomy mask; one subject
   per image, split by image (test 1/3: 40 train / 20 test).
2. A ``frame_contrastive`` encoder (SimCLR views of single frames) is trained on the 40 training
   images only (a plain loop; batches drawn without replacement so no image is its own negative),
   once per seed; a random encoder of the same architecture is the control.
3. The 20 test images are explained in one batch (each image's negatives: the 19 others), with and
   without restriction to the imaging region (``usssl.downstream.localise.shard_region``: the
   cached region within the lit pixels, i.e. the fan) and with T = 1 and T = 10 refinement
   iterations; baselines: the centre-of-fan box and MONAI's ultrasound confidence map.

    OMP_NUM_THREADS=1 python benchmarks/contracam_hc18.py --seeds 0 1 2 --out /tmp/contracam-hc18
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

HC18 = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "hc18_fetal_head" / "training_set"
METRICS = ("mask_iou", "box_iou", "pointing")


def ingest_hc18(out: Path, size: tuple[int, int]):
    from usssl.config import IngestConfig, SplitConfig
    from usssl.data.cache import Cache
    from usssl.data.ingest import ingest

    os.environ.setdefault("USSSL_SUBJECT_KEY", "contracam-hc18-benchmark")
    if not (out / "index.parquet").is_file():
        ingest([HC18], out, IngestConfig(size=size, fps=10, workers=2, split=SplitConfig(test=1 / 3, seed=0)),
               progress=False, subject_per_recording=True, min_subjects_per_class=0)
    return Cache(out)


def arrays(cache, split: str):
    """(frames (N, H, W) uint8, masks (N, H, W) uint8, regions (N, H, W) bool) of one split."""
    from usssl.downstream.localise import shard_region

    shards = [cache.shard(s) for s in cache.shard_ids(split)]
    return (np.stack([np.asarray(s.frames[0]) for s in shards]), np.stack([np.asarray(s.masks[0]) for s in shards]),
            np.stack([shard_region(s) for s in shards]))


def train(frames, steps, batch, seed, width, dim, lr):
    from usssl.config import PretrainConfig
    from usssl.methods.frame_contrastive import FrameContrastiveModule

    torch.manual_seed(seed)
    cfg = PretrainConfig.model_validate({"method": "frame_contrastive", "encoder": {"width": width, "dim": dim},
                                         "projection_dim": 64, "frame_contrastive": {}})
    module = FrameContrastiveModule(cfg)
    module.log = lambda *a, **k: None
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    module.train()
    for step in range(steps):
        idx = rng.choice(len(frames), size=min(batch, len(frames)), replace=False)
        x = torch.from_numpy(frames[idx].astype(np.float32) / 255.0)[:, None, None]
        loss = module.training_step({"video": x}, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    module.eval()
    return module, losses


def score_maps(maps_of, masks):
    """Mean of each metric over the frames; ``maps_of`` yields (map, box) per frame."""
    from usssl.downstream.localise import score_frame

    rows = [score_frame(cam, box, truth) for (cam, box), truth in zip(maps_of, masks)]
    return {m: float(np.mean([r[m] for r in rows])) for m in METRICS}


def contracam_rows(scorer, frames, masks, regions, restrict):
    """{T: metrics} for T = 1 and T = 10 on the test batch."""
    from usssl.downstream.contracam import contracam, mask_boxes

    x = torch.from_numpy(frames.astype(np.float32) / 255.0)[:, None]
    region = torch.from_numpy(regions) if restrict else None
    steps = contracam(scorer, x, region=region, iterations=10, every=True)
    out = {}
    for t in (1, 10):
        cams = [steps[t - 1][k, 0].numpy() for k in range(len(frames))]
        out[t] = score_maps([(c, (mask_boxes(c) or [None])[0]) for c in cams], masks)
    return out


def confidence_rows(frames, masks, regions):
    """MONAI's ultrasound confidence map (Karamalis et al.), min–max normalised in the region."""
    from monai.transforms import UltrasoundConfidenceMapTransform

    from usssl.downstream.contracam import mask_boxes

    transform = UltrasoundConfidenceMapTransform(sink_mode="all")
    maps = []
    for frame, region in zip(frames, regions):
        conf = np.asarray(transform(frame[None].astype(np.float32) / 255.0), np.float32).reshape(frame.shape)
        conf = np.where(region, conf, 0.0)
        inside = conf[region]
        conf = (conf - inside.min()) / max(float(inside.max() - inside.min()), 1e-8) * region
        maps.append((conf, (mask_boxes(conf) or [None])[0]))
    return score_maps(maps, masks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 96))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/contracam-hc18"))
    args = ap.parse_args()
    from usssl.config import EncoderConfig
    from usssl.downstream.contracam import ContrastiveScorer, reduce_last_stride
    from usssl.downstream.localise import centre_map
    from usssl.models.encoders import build_encoder

    if not HC18.is_dir():
        raise SystemExit(f"{HC18}: HC18 subset absent (../shared/realdata); nothing to measure")
    args.out.mkdir(parents=True, exist_ok=True)
    size = tuple(args.size)
    t0 = time.time()
    cache = ingest_hc18(args.out / "cache", size)
    train_frames, _, _ = arrays(cache, "train")
    frames, masks, regions = arrays(cache, "test")
    print(f"cache: {len(train_frames)} train / {len(frames)} test images ({time.time() - t0:.0f} s); head covers "
          f"{masks.mean():.3f} of a test frame, the fan {regions.mean():.3f}", flush=True)
    results: dict[str, dict] = {}

    def add(name, seed, res):
        for t, metrics in res.items():
            results.setdefault(f"{name}|T={t}", {})[seed] = metrics

    info = {}
    for seed in args.seeds:
        t0 = time.time()
        module, losses = train(train_frames, args.steps, args.batch, seed, args.width, args.dim, args.lr)
        info[seed] = {"loss_first": float(np.mean(losses[:20])), "loss_last": float(np.mean(losses[-20:])),
                      "train_s": round(time.time() - t0, 1)}
        trained = ContrastiveScorer(module.encoder.image_encoder, module.head)
        finer = ContrastiveScorer(reduce_last_stride(module.encoder.image_encoder, size), module.head)
        torch.manual_seed(seed + 1000)
        random = ContrastiveScorer(build_encoder(EncoderConfig(name="tiny2d", width=args.width, dim=args.dim))
                                   .image_encoder.eval())
        add("ContraCAM, trained, fan", seed, contracam_rows(trained, frames, masks, regions, True))
        add("ContraCAM, trained, whole frame", seed, contracam_rows(trained, frames, masks, regions, False))
        add("ContraCAM, trained, fan, last stride 1", seed, contracam_rows(finer, frames, masks, regions, True))
        add("ContraCAM, random encoder, fan", seed, contracam_rows(random, frames, masks, regions, True))
        add("ContraCAM, random encoder, whole frame", seed, contracam_rows(random, frames, masks, regions, False))
        print(f"seed {seed}: {info[seed]}", flush=True)
    base = [centre_map(r) for r in regions]
    results["centre-of-fan box|T=–"] = {"–": score_maps(base, masks)}
    t0 = time.time()
    results["ultrasound confidence map (MONAI)|T=–"] = {"–": confidence_rows(frames, masks, regions)}
    print(f"confidence maps: {time.time() - t0:.1f} s", flush=True)
    table = []
    for name, per_seed in results.items():
        values = {m: [v[m] for v in per_seed.values()] for m in METRICS}
        row = {"row": name, "n_seeds": len(per_seed)}
        for m, vs in values.items():
            row[m], row[f"{m}_sd"] = float(np.mean(vs)), float(np.std(vs))
        table.append(row)
        said = "  ".join(f"{m} {row[m]:.3f}±{row[f'{m}_sd']:.3f}" for m in METRICS)
        print(f"{name:50s} {said}", flush=True)
    (args.out / "results.json").write_text(json.dumps({"args": {**vars(args), "out": str(args.out)}, "train": info,
                                                       "n_train": len(train_frames), "n_test": len(frames),
                                                       "head_area": float(masks.mean()), "table": table,
                                                       "per_seed": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
