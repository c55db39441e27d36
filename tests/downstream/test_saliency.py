"""Gaze saliency: ground truth from the cache's gaze, the dataset, the model, KL training, run_saliency."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from usssl.config import EncoderConfig, IngestConfig
from usssl.data.cache import INDEX_COLUMNS, Cache, ShardWriter, write_index
from usssl.engine.files import write_json_atomic as write_json
from usssl.downstream.saliency import (CentreBias, SaliencyConfig, SaliencyDataset, SaliencyModel,
                                       UniformSaliency, evaluate_saliency, fit_centre_bias, kl_loss,
                                       run_saliency, shard_sigma, train_saliency)
from usssl.downstream.saliency_metrics import saliency_scores
from usssl.errors import DataError
from usssl.models.encoders import build_encoder

NAN = np.nan
# frame: 0 gaze, 1–3 none, 4 and 5 gaze at nearly the same place (both round to pixel (8, 10))
GAZE = np.array([[4.2, 5.0], [NAN, NAN], [NAN, NAN], [NAN, NAN], [10.0, 8.0], [10.4, 8.0]], np.float32)


def write_cache(root, shards: dict) -> Cache:
    """A hand-written cache: {shard: (subject, split, gaze (T, 2), shard.json extras)}, frames 16×20."""
    rows = []
    for shard_id, (subject, split, gaze, extra) in shards.items():
        n = len(gaze)
        writer = ShardWriter(root, shard_id, capacity=n, size=(16, 20))
        writer.append((np.arange(n, dtype=np.uint8)[:, None, None] * 40).repeat(16, 1).repeat(20, 2))
        writer.finish(audio=None, labels=np.full(n, -1), gaze=gaze, flags=np.zeros(n),
                      info={"height": 16, "width": 20, **extra})
        rows.append({"shard": shard_id, "subject": subject, "split": split, "fps": 10.0, "n_frames": n,
                     "height": 16, "width": 20, "has_audio": False, "has_speech": False, "n_labelled": 0,
                     "digest": ""})
    write_json(root / "cache.json", {"classes": [], "audio_rate": 16000})
    splits = {s: sorted({v[0] for v in shards.values() if v[1] == s}) for s in ("train", "val", "test")}
    (root / "splits.json").write_text(json.dumps(splits))
    write_index(root, pd.DataFrame(rows, columns=INDEX_COLUMNS))
    return Cache(root)


@pytest.fixture(scope="module")
def hand_cache(tmp_path_factory) -> Cache:
    crop = {"crop_box": [0, 0, 200, 80]}  # 200 × 80 source pixels → 20 × 16 cached pixels
    return write_cache(tmp_path_factory.mktemp("hand"), {"a": ("subj_a", "train", GAZE, crop),
                                                         "b": ("subj_b", "test", GAZE[::-1].copy(), {})})


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory) -> Cache:
    """Three synthetic subjects (4 s at 10 fps, 32×32 cached), ingested with their gaze."""
    from usssl.data.ingest import ingest
    from usssl.data.synth import generate

    base = tmp_path_factory.mktemp("saliency")
    corpus = generate(base / "corpus", subjects=3, seed=0, duration_s=4, size=(64, 64), write_dicom=False,
                      workers=1)
    ingest([corpus], base / "cache", IngestConfig(size=(32, 32), fps=10, workers=1, split={"test": 0.34}),
           progress=False)
    return Cache(base / "cache")


def test_items_skip_frames_without_gaze_in_the_window(hand_cache):
    ds = SaliencyDataset(hand_cache, ["a"], sigma=1.5, window_frames=1)
    assert [t for _, t in ds.items] == [0, 1, 3, 4, 5]  # frame 2's window (1–3) has no gaze
    assert [t for _, t in SaliencyDataset(hand_cache, ["a"], window_frames=0).items] == [0, 4, 5]
    assert [t for _, t in SaliencyDataset(hand_cache, ["a"], window_frames=1, frame_stride=2).items] == [0, 4]
    assert [t for _, t in SaliencyDataset(hand_cache, ["a"], window_frames=7).items] == [0, 1, 2, 3, 4, 5]  # > scan
    points = ds[1]["points"].numpy()  # frame 1's window: frames 0, 1, 2
    assert points[0].tolist() == pytest.approx([4.2, 5.0]) and np.isnan(points[1:]).all()
    assert np.isnan(ds[0]["points"][0].numpy()).all()  # frame −1 is outside the scan


def test_ground_truth_sums_to_one_peaks_at_the_gaze_and_uses_sigma(hand_cache):
    ds = SaliencyDataset(hand_cache, ["a"], sigma=1.5, window_frames=1)
    item = ds[0]  # one gaze point, x 4.2, y 5.0 → pixel (row 5, col 4)
    gt = item["saliency"][0].numpy()
    assert item["saliency"].shape == (1, 16, 20) and gt.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.unravel_index(gt.argmax(), gt.shape) == (5, 4)
    assert gt[5, 7] / gt[5, 4] == pytest.approx(math.exp(-(3**2) / (2 * 1.5**2)), rel=0.02)
    assert item["fixations"].sum() == 1 and item["fixations"][0, 5, 4] == 1
    wide = SaliencyDataset(hand_cache, ["a"], sigma=3.0, window_frames=1)[0]["saliency"][0].numpy()
    assert wide.max() < gt.max() and wide.sum() == pytest.approx(1.0, abs=1e-6)
    last = ds[4]["fixations"][0]  # frame 5: gaze of frames 4 and 5, both on pixel (8, 10)
    assert last[8, 10] == 2 and last.sum() == 2


def test_video_is_the_frame_in_unit_range_and_clips_repeat_edges(hand_cache):
    item = SaliencyDataset(hand_cache, ["a"], window_frames=1)[2]  # frame 3
    assert item["video"].shape == (1, 1, 16, 20) and item["video"].max() == pytest.approx(120 / 255)
    clip = SaliencyDataset(hand_cache, ["a"], window_frames=1, clip_frames=3)[0]["video"]  # frame 0
    assert clip.shape == (1, 3, 16, 20)
    assert clip[0, :, 0, 0].tolist() == pytest.approx([0.0, 0.0, 40 / 255])  # frames −1 → 0, 0, 1


def test_sigma_from_degrees_through_the_crop_and_the_refusals(hand_cache):
    cfg = SaliencyConfig(sigma_deg=1.0, screen_width_px=1920, screen_width_mm=520.0, distance_mm=600.0,
                         display_scale=2.0)
    screen = 2 * 600.0 * math.tan(math.radians(0.5)) * 1920 / 520.0  # 38.66 screen px
    sy, sx = shard_sigma(hand_cache, "a", cfg)  # crop 200 × 80 → 20 × 16
    assert sx == pytest.approx(screen / 2 * 20 / 200) and sy == pytest.approx(screen / 2 * 16 / 80)
    assert shard_sigma(hand_cache, "a", SaliencyConfig(sigma_px=2.5)) == (2.5, 2.5)
    with pytest.raises(DataError, match="sigma_px"):
        shard_sigma(hand_cache, "b", cfg)  # no crop box recorded
    with pytest.raises(ValidationError, match="distance_mm"):
        SaliencyConfig(sigma_deg=1.0, screen_width_px=1920, screen_width_mm=520.0)
    with pytest.raises(ValidationError):
        SaliencyConfig(window_frame=2)  # typo: unknown key
    with pytest.raises(DataError, match="split"):
        SaliencyDataset(hand_cache, ["a", "b"], split="train")


def test_dataset_on_the_synthetic_cache(synth_cache):
    train_ids = synth_cache.shard_ids("train")
    ds = SaliencyDataset.from_config(synth_cache, train_ids, SaliencyConfig(), split="train")
    n_frames = sum(len(synth_cache.shard(s)) for s in train_ids)
    assert 0.5 * n_frames < len(ds) <= n_frames
    item = ds[len(ds) // 2]
    assert item["video"].shape == (1, 1, 32, 32) and 0 <= item["video"].min() and item["video"].max() <= 1
    assert item["saliency"].sum() == pytest.approx(1.0, abs=1e-5)
    pts = item["points"].numpy()
    assert item["fixations"].sum() == (~np.isnan(pts).any(axis=1)).sum() > 0
    strided = SaliencyDataset.from_config(synth_cache, train_ids, SaliencyConfig(frame_stride=4))
    assert len(strided) == pytest.approx(len(ds) / 4, abs=len(train_ids))


@pytest.mark.parametrize("name,frames", [("tiny2d", 1), ("tiny3d", 2)])
def test_model_outputs_a_distribution_at_the_input_size(name, frames):
    torch.manual_seed(0)
    model = SaliencyModel(build_encoder(EncoderConfig(name=name, width=4, dim=8)), channels=8, blocks=2)
    out = model(torch.rand(3, 1, frames, 24, 40))
    assert out.shape == (3, 24, 40) and (out >= 0).all()
    assert out.sum(dim=(1, 2)).tolist() == pytest.approx([1.0] * 3, abs=1e-5)


def test_frozen_encoder_gets_no_gradient_and_keeps_eval_mode():
    frozen = SaliencyModel(build_encoder(EncoderConfig(width=4, dim=8)), channels=8, freeze_encoder=True)
    frozen.train()
    assert not frozen.encoder.training and frozen.decoder.training
    kl_loss(frozen.log_saliency(torch.rand(2, 1, 1, 32, 32)), torch.full((2, 32, 32), 1 / 1024)).backward()
    assert all(p.grad is None for p in frozen.encoder.parameters())
    assert frozen.decoder[0].weight.grad.abs().sum() > 0
    tuned = SaliencyModel(build_encoder(EncoderConfig(width=4, dim=8)), channels=8, freeze_encoder=False).train()
    gt = torch.zeros(2, 32, 32)
    gt[:, 5, 7] = 1.0
    kl_loss(tuned.log_saliency(torch.rand(2, 1, 1, 32, 32)), gt).backward()
    assert tuned.encoder.training and tuned.encoder.image_encoder.features[0].weight.grad.abs().sum() > 0


def test_kl_loss_hand_computed():
    gt = torch.tensor([[[0.5, 0.5], [0.0, 0.0]]])
    assert kl_loss(torch.full((1, 2, 2), math.log(0.25)), gt).item() == pytest.approx(math.log(2), abs=1e-6)
    assert kl_loss(gt.clamp_min(1e-12).log(), gt).item() == pytest.approx(0.0, abs=1e-6)


class Blobs(torch.utils.data.Dataset):
    """Frames with one bright square; the gaze looks at the square."""

    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.video = torch.rand(n, 1, 1, 32, 32, generator=g) * 0.1
        self.gt = torch.zeros(n, 1, 32, 32)
        for i in range(n):
            r, c = (int(v) for v in torch.randint(4, 24, (2,), generator=g))
            self.video[i, 0, 0, r : r + 6, c : c + 6] += 0.8
            self.gt[i, 0, r + 2 : r + 4, c + 2 : c + 4] = 0.25

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.video[i], "saliency": self.gt[i]}


def test_kl_training_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    data = Blobs()
    model = SaliencyModel(build_encoder(EncoderConfig(width=4, dim=8)), channels=16, freeze_encoder=False)
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=8)))
    with torch.no_grad():
        before = kl_loss(model.eval().log_saliency(batch["video"]), batch["saliency"][:, 0]).item()
    history = train_saliency(model, data, epochs=30, lr=3e-3, batch_size=8, seed=0)
    with torch.no_grad():
        after = kl_loss(model.eval().log_saliency(batch["video"]), batch["saliency"][:, 0]).item()
    assert len(history) == 30 and history[-1] < history[0]
    assert after < 0.7 * before, (before, after)


def test_baselines_are_distributions_and_the_centre_bias_fits_its_width(hand_cache):
    video = torch.zeros(2, 1, 1, 16, 20)
    centre = CentreBias(0.2)(video)
    assert centre.shape == (2, 16, 20) and centre.sum(dim=(1, 2)).tolist() == pytest.approx([1.0, 1.0])
    assert torch.allclose(centre, centre.flip(1)) and torch.allclose(centre, centre.flip(2))  # centred
    # centre (y, x) = (7.5, 9.5), σ = (0.2·16, 0.2·20) = (3.2, 4): pixel (7, 9) is 0.5 px from the centre in x,
    # pixel (7, 13) 3.5 px; same row, so the ratio is exp((3.5² − 0.5²) / (2·4²))
    assert (centre[0, 7, 9] / centre[0, 7, 13]).item() == pytest.approx(math.exp((3.5**2 - 0.5**2) / 32), rel=1e-5)
    assert UniformSaliency()(video).unique().tolist() == pytest.approx([1 / 320])

    class Fixed(torch.utils.data.Dataset):
        def __init__(self, gt):
            self.gt = gt

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"saliency": self.gt[None]}

    assert fit_centre_bias(Fixed(CentreBias(0.1)(video)[0])).fraction == 0.1
    assert fit_centre_bias(Fixed(CentreBias(0.5)(video)[0])).fraction == 0.5


def test_evaluate_saliency_scores_every_frame(hand_cache):
    ds = SaliencyDataset(hand_cache, ["a"], sigma=1.5, window_frames=1)
    rows = evaluate_saliency(CentreBias(0.2), ds, batch_size=2, name="centre_bias")
    assert rows.columns.tolist() == ["model", "shard", "frame", "subject", "kl", "cc", "nss", "sim", "auc_judd"]
    assert rows["frame"].tolist() == [0, 1, 3, 4, 5] and set(rows["model"]) == {"centre_bias"}
    item = ds[3]
    expected = saliency_scores(CentreBias(0.2)(item["video"][None])[0].numpy(), item["saliency"][0].numpy(),
                               item["fixations"][0].numpy())
    assert rows.iloc[3][list(expected)].tolist() == pytest.approx(list(expected.values()))


def test_run_saliency_writes_results_and_beats_the_uniform_map(synth_cache, tmp_path):
    cfg = SaliencyConfig(epochs=3, batch_size=16, n_overlays=2, decoder_channels=8, frame_stride=2)
    encoder = build_encoder(EncoderConfig(width=4, dim=8))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    summary = run_saliency(synth_cache, encoder, cfg.model_copy(update={"freeze_encoder": False}), tmp_path, seed=0)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # the caller's copy is untouched
    results = pd.read_csv(tmp_path / "saliency_results.csv")
    n_test = int(summary["n_test_frames"])
    assert results["model"].value_counts().to_dict() == {"trained": n_test, "centre_bias": n_test, "uniform": n_test}
    table = pd.read_csv(tmp_path / "saliency_summary.csv").set_index("model")
    assert table.loc["trained", "kl"] == pytest.approx(summary["trained/kl"])
    assert summary["uniform/cc"] == 0.0 and summary["uniform/auc_judd"] == 0.5
    assert summary["trained/kl"] < summary["uniform/kl"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["saliency_overlay_00.png", "saliency_overlay_01.png"]
    again = run_saliency(synth_cache, lambda: build_encoder(EncoderConfig(width=4, dim=8)), cfg, tmp_path / "b", seed=0)
    assert set(again) == set(summary)


def test_run_saliency_refuses_a_cache_without_gaze(tmp_path):
    blind = np.full((6, 2), np.nan, np.float32)
    cache = write_cache(tmp_path, {"a": ("s_a", "train", blind, {}), "b": ("s_b", "test", blind, {})})
    with pytest.raises(DataError, match="gaze"):
        run_saliency(cache, build_encoder(EncoderConfig(width=4, dim=8)), SaliencyConfig(), tmp_path / "out")


def test_hflip_mirrors_frame_and_ground_truth_together():
    class Echo(nn.Module):
        """Predicts the (normalised) frame itself, so the KL is 0 exactly when the pair stays aligned."""

        def __init__(self):
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(()))
            self.seen = []

        def log_saliency(self, video):
            self.seen.append(video.clone())
            frame = video[:, 0, 0] + 0 * self.unused  # (B, H, W)
            return (frame / frame.sum(dim=(1, 2), keepdim=True)).log()

    frame = torch.arange(1.0, 13.0).view(3, 4)  # left ≠ right
    data = [{"video": frame[None, None], "saliency": (frame / frame.sum())[None]}] * 8
    echo = Echo()
    history = train_saliency(echo, data, epochs=2, batch_size=8, hflip=True, seed=0)
    assert history == pytest.approx([0.0, 0.0], abs=1e-6)
    seen = torch.cat(echo.seen)[:, 0, 0]  # (16, 3, 4)
    flipped = torch.tensor([torch.equal(v, frame.flip(-1)) for v in seen])
    assert 0 < flipped.sum() < len(seen)  # some mirrored, some not
    assert all(torch.equal(v, frame) for v in seen[~flipped])
