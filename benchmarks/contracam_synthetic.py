"""ContraCAM on the synthetic corpus: mask IoU, box IoU and pointing game against its anatomy masks.

Frames and masks come straight from the renderer (``render_scan``), cropped to the fan's bounding
box and resized as ingest does (frames INTER_AREA, masks nearest), so the anatomy masks are exact in
cached pixels; the imaging region is the renderer's fan mask treated the same way. A frame-level
contrastive encoder (``methods/frame_contrastive.py``) is trained on the training subjects with a
plain loop and explained on the test subjects' labelled frames.

    OMP_NUM_THREADS=1 python benchmarks/contracam_synthetic.py --steps 600 --out /tmp/contracam
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def corpus(subjects, size, duration_s, fps, seed=0):
    from usssl.data.synth.render import fan_geometry
    from usssl.data.synth.scan import render_scan

    frames, masks = [], []
    geo = fan_geometry((160, 160))
    x0, y0, x1, y1 = geo.bbox
    fan = cv2.resize(geo.mask()[y0:y1, x0:x1].astype(np.uint8), size[::-1], interpolation=cv2.INTER_NEAREST) > 0
    for k in subjects:
        s = render_scan(k, seed, duration_s=duration_s, fps=fps, size=(160, 160))
        frames.append(np.stack([cv2.resize(f[y0:y1, x0:x1], size[::-1], interpolation=cv2.INTER_AREA)
                                for f in s.frames]))
        masks.append(np.stack([cv2.resize(m[y0:y1, x0:x1], size[::-1], interpolation=cv2.INTER_NEAREST)
                               for m in s.masks]))
    return np.concatenate(frames), np.concatenate(masks), fan


def train(frames, steps, batch, seed, width, dim):
    from usssl.config import PretrainConfig
    from usssl.methods.frame_contrastive import FrameContrastiveModule

    torch.manual_seed(seed)
    cfg = PretrainConfig.model_validate({"method": "frame_contrastive", "encoder": {"width": width, "dim": dim},
                                         "projection_dim": 64, "frame_contrastive": {}})
    module = FrameContrastiveModule(cfg)
    module.log = lambda *a, **k: None
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    losses = []
    module.train()
    for step in range(steps):
        idx = rng.integers(len(frames), size=batch)
        x = torch.from_numpy(frames[idx].astype(np.float32) / 255.0)[:, None, None]
        loss = module.training_step({"video": x}, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return module, losses


def evaluate(scorer, frames, masks, fan, restrict, iterations, batch, seed, every):
    """Per-step (mask IoU, box IoU, pointing) means over the frames, for the steps in ``every``."""
    from usssl.downstream.contracam import contracam, mask_boxes
    from usssl.downstream.localise import score_frame

    order = np.random.default_rng(seed).permutation(len(frames))
    region = torch.from_numpy(fan)[None] if restrict else None
    rows = {t: [] for t in every}
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        if len(idx) < 2:
            continue
        x = torch.from_numpy(frames[idx].astype(np.float32) / 255.0)[:, None]
        steps = contracam(scorer, x, region=region, iterations=iterations, every=True)
        for t in every:
            for k, i in enumerate(idx):
                cam = steps[t - 1][k, 0].numpy()
                boxes = mask_boxes(cam)
                rows[t].append(score_frame(cam, boxes[0] if boxes else None, masks[i]))
    return {t: {m: float(np.mean([r[m] for r in rs])) for m in ("mask_iou", "box_iou", "pointing")}
            for t, rs in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--stride", type=int, default=4, help="every n-th test frame")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/contracam"))
    args = ap.parse_args()
    from usssl.downstream.contracam import ContrastiveScorer, reduce_last_stride
    from usssl.downstream.localise import centre_map, score_frame
    from usssl.models.encoders import build_encoder
    from usssl.config import EncoderConfig

    args.out.mkdir(parents=True, exist_ok=True)
    size = (args.size, args.size)
    t0 = time.time()
    train_frames, _, fan = corpus(range(0, 8), size, args.duration, args.fps)
    test_frames, test_masks, _ = corpus(range(8, 12), size, args.duration, args.fps)
    keep = np.flatnonzero(test_masks.reshape(len(test_masks), -1).any(1))[:: args.stride]
    test_frames, test_masks = test_frames[keep], test_masks[keep]
    print(f"corpus: {len(train_frames)} training frames, {len(test_frames)} test frames with anatomy "
          f"({time.time() - t0:.0f} s)", flush=True)
    t0 = time.time()
    module, losses = train(train_frames, args.steps, args.batch, args.seed, args.width, args.dim)
    print(f"trained {args.steps} steps in {time.time() - t0:.0f} s; NT-Xent first 20 {np.mean(losses[:20]):.3f}, "
          f"last 20 {np.mean(losses[-20:]):.3f} (ln(2B-1) = {np.log(2 * args.batch - 1):.3f})", flush=True)
    module.eval()
    trained = ContrastiveScorer(module.encoder.image_encoder, module.head)
    finer = ContrastiveScorer(reduce_last_stride(module.encoder.image_encoder, size), module.head)
    torch.manual_seed(args.seed + 1)
    random_enc = build_encoder(EncoderConfig(name="tiny2d", width=args.width, dim=args.dim)).image_encoder.eval()
    random = ContrastiveScorer(random_enc)
    results = {}
    for name, scorer, restrict in (("trained, fan", trained, True), ("trained, no fan", trained, False),
                                   ("trained ×2 res, fan", finer, True), ("random, fan", random, True)):
        t0 = time.time()
        res = evaluate(scorer, test_frames, test_masks, fan, restrict, 10, 32, args.seed, every=(1, 10))
        results[name] = res
        print(name, json.dumps(res), f"({time.time() - t0:.0f} s)", flush=True)
    cam, box = centre_map(fan)
    base = [score_frame(cam, box, m) for m in test_masks]
    results["centre box"] = {m: float(np.mean([r[m] for r in base])) for m in ("mask_iou", "box_iou", "pointing")}
    print("centre box", json.dumps(results["centre box"]))
    gt_area = float(test_masks.reshape(len(test_masks), -1).mean(1).mean())
    (args.out / "results.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                                       "loss_first": float(np.mean(losses[:20])),
                                                       "loss_last": float(np.mean(losses[-20:])),
                                                       "n_test": len(test_frames), "gt_area": gt_area,
                                                       "results": results}, indent=1))


if __name__ == "__main__":
    main()
