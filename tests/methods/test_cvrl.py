"""CVRLModule and its temporally consistent augmentation."""

import pytest
import torch
from pydantic import Field

from usssl.config import PretrainConfig
from usssl.data.augment import (ContrastiveAugmentParams, ContrastiveClipAugment, gaussian_blur_clips,
                                      jitter_intensity)
from usssl.config.methods import CVRLConfig
from usssl.methods.cvrl import CVRLModule
from usssl.models.video3d import build_video3d


class Cfg(PretrainConfig):
    """PretrainConfig with the field the lead adds."""

    cvrl: CVRLConfig = Field(default_factory=CVRLConfig)


def cfg(**cv):
    return Cfg.model_validate({"encoder": {"width": 4, "dim": 16}, "projection_dim": 8,
                               "cvrl": {"clip_frames": 4, "head_hidden_dim": 32, **cv}})


def step(module, batch):
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
    return module.training_step(batch, 0), logged


@pytest.mark.parametrize("three_d", [False, True])
def test_training_step_logs_and_reaches_the_encoder(three_d):
    torch.manual_seed(0)
    encoder = build_video3d("tiny3d", width=4, dim=16) if three_d else None
    module = CVRLModule(cfg(), encoder=encoder)
    batch = {"video_a": torch.rand(6, 1, 4, 32, 32), "video_b": torch.rand(6, 1, 4, 32, 32)}
    loss, logged = step(module, batch)
    loss.backward()
    assert set(logged) == {"train/loss", "train/nt_xent", "train/positive_cosine", "train/embedding_std"}
    assert torch.isfinite(loss) and loss.item() > 0
    assert -1 <= logged["train/positive_cosine"] <= 1 and 0 < logged["train/embedding_std"] < 1
    first = module.encoder.stem[0] if three_d else module.encoder.image_encoder.features[0]
    assert first.weight.grad.abs().sum() > 0


def test_head_is_three_linear_bn_relu_blocks_then_linear():
    head = CVRLModule(cfg()).head
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 3 + ["Linear"]
    assert head[0].in_features == 16 and head[0].out_features == 32 and head[-1].out_features == 8
    assert CVRLModule(cfg(head_hidden_dim=None)).head[0].out_features == 16  # default: the encoder's out_dim


def identity(b):
    one, zero = torch.ones(b), torch.zeros(b)
    return ContrastiveAugmentParams(crop_w=one, crop_h=one, centre_x=zero, centre_y=zero, flip=zero.bool(),
                                    jitter=zero.bool(), brightness=one, contrast=one, gamma=one,
                                    blur=zero.bool(), sigma=one)


def test_identity_flip_and_hand_computed_jitter():
    video = torch.rand(2, 1, 3, 8, 10)
    assert torch.allclose(ContrastiveClipAugment.apply(video, identity(2)), video, atol=1e-5)
    p = identity(2)
    p.flip = torch.tensor([True, False])
    out = ContrastiveClipAugment.apply(video, p)
    assert torch.allclose(out[0], video[0].flip(-1), atol=1e-5) and torch.allclose(out[1], video[1], atol=1e-5)
    clip = torch.tensor([0.2, 0.4]).view(1, 1, 2, 1, 1)  # frame values 0.2 and 0.4
    out = jitter_intensity(clip, torch.tensor([1.5]), torch.tensor([2.0]), torch.tensor([2.0]))
    # ×1.5 → 0.3, 0.6; contrast ×2 around the clip mean 0.45 → 0.15, 0.75; gamma 2 → 0.0225, 0.5625
    assert torch.allclose(out.flatten(), torch.tensor([0.0225, 0.5625]), atol=1e-6)


def test_one_draw_per_clip_every_frame_alike_and_independent_views():
    torch.manual_seed(0)
    frame = torch.rand(4, 1, 1, 32, 32)
    static = frame.expand(4, 1, 5, 32, 32).contiguous()  # a clip whose frames are identical
    aug = ContrastiveClipAugment()
    g = torch.Generator().manual_seed(1)
    out = aug(static, generator=g)
    assert out.shape == static.shape and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-6)  # same draw on every frame
    assert not torch.allclose(out, aug(static, generator=g), atol=1e-3)  # the two views differ
    params = aug.randomize(2000, 224, 224, torch.Generator().manual_seed(0))
    area = params.crop_w * params.crop_h
    assert area.min() >= 0.3 - 1e-6 and area.max() <= 1 + 1e-6 and (params.crop_w <= 1).all()
    assert 0.75 < params.jitter.float().mean() < 0.85 and 0.45 < params.blur.float().mean() < 0.55
    assert params.sigma.min() >= 0.1 and params.sigma.max() <= 2.0


def test_blur_keeps_constants_and_smooths_a_dot():
    flat = torch.full((2, 1, 2, 40, 40), 0.3)
    assert torch.allclose(gaussian_blur_clips(flat, torch.tensor([1.0, 2.0])), flat, atol=1e-6)
    dot = torch.zeros(2, 1, 1, 40, 40)
    dot[..., 20, 20] = 1.0
    out = gaussian_blur_clips(dot, torch.tensor([0.5, 1.5]), mask=torch.tensor([False, True]))
    assert torch.equal(out[0], dot[0])  # not selected: unchanged
    assert out[1].sum().item() == pytest.approx(1.0, abs=1e-5) and out[1].max() < 0.2


def test_capped_gap_keeps_the_linearly_decreasing_density_below_the_cap():
    import numpy as np
    from scipy.stats import chisquare

    from usssl.data.clips import sample_interval_starts

    rng = np.random.default_rng(7)
    n_frames, n, stride, max_gap = 40, 4, 2, 9  # T = 34 valid starts, G = min(T, 9 + 1) = 10
    draws = np.array([sample_interval_starts(n_frames, n, stride, rng, max_gap) for _ in range(20000)])
    gaps = np.abs(draws[:, 0] - draws[:, 1])
    assert gaps.max() == 9 and draws.min() >= 0 and draws.max() < 34
    expected = (10 - np.arange(10)) / 55  # P(Δ = d) = (G − d) / (G(G+1)/2), G = 10
    stat, p = chisquare(np.bincount(gaps, minlength=10), expected * len(gaps))
    assert p > 0.01, f"chi-square {stat:.1f}, p = {p:.4f}"
    # a cap beyond the video is the paper's sampler: the same draws from the same seed
    a = [sample_interval_starts(n_frames, n, stride, np.random.default_rng(3), 1000) for _ in range(3)]
    b = [sample_interval_starts(n_frames, n, stride, np.random.default_rng(3)) for _ in range(3)]
    assert a == b


def test_pair_dataset_caps_the_gap_in_seconds_with_the_shard_fps(tmp_path):
    import json

    import numpy as np
    import pandas as pd

    from usssl.data.cache import INDEX_COLUMNS, Cache, ShardWriter, write_index
    from usssl.engine.files import write_json_atomic as write_json
    from usssl.data.clips import MAX_GAP_S, ClipPairDataset

    writer = ShardWriter(tmp_path, "s0", capacity=200, size=(4, 4))
    writer.append(np.zeros((200, 4, 4), np.uint8))
    writer.finish(audio=None, labels=np.full(200, -1), gaze=np.full((200, 2), np.nan), flags=np.zeros(200), info={})
    write_json(tmp_path / "cache.json", {"classes": [], "audio_rate": 16000})
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["a"], "test": []}))
    write_index(tmp_path, pd.DataFrame([{"shard": "s0", "subject": "a", "split": "train", "fps": 10.0,
                                         "n_frames": 200, "height": 4, "width": 4, "has_audio": False,
                                         "has_speech": False, "n_labelled": 0, "digest": ""}],
                                       columns=INDEX_COLUMNS))
    cache = Cache(tmp_path)

    def gaps(max_gap_s):
        ds = ClipPairDataset(cache, ["s0"], clip_frames=4, stride=2, pairs_per_epoch=300, max_gap_s=max_gap_s)
        return np.array([abs(int(ds[i]["start_a"]) - int(ds[i]["start_b"])) for i in range(300)])

    capped = gaps(0.5)  # 0.5 s at 10 fps: Δ ≤ 5 frames
    assert capped.max() == 5 and set(capped) == set(range(6))
    assert gaps(None).max() > 50  # the whole recording: T = 194 valid starts
    assert CVRLConfig().max_gap_s == MAX_GAP_S  # the pipeline's dataset and the config agree
