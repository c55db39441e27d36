"""VideoSpeechModule: one training step with each speech encoder kind; the affinity gate on a mixed
batch, the hard positive, the self-paced pace at initialisation, the temperature without
normalisation, the order head."""

import os

import pytest
import torch

from usssl.config import PretrainConfig
from usssl.methods.video_speech import VideoSpeechModule


def batch(b=6, rate=16000, affinity=1.0):
    g = torch.Generator().manual_seed(0)
    affinity = torch.as_tensor(affinity, dtype=torch.float32)
    return {"video": torch.rand(b, 1, 1, 32, 32, generator=g),
            "audio": torch.randn(b, int(0.6 * rate), generator=g) * 0.1,
            "audio_hard_pos": torch.randn(b, int(0.6 * rate), generator=g) * 0.1,
            "audio_hard_neg": torch.randn(b, int(0.6 * rate), generator=g) * 0.1,
            "hard_neg_valid": torch.ones(b),
            "order_clip": torch.rand(b, 1, 4, 32, 32, generator=g),
            "affinity": affinity.expand(b).clone() if affinity.ndim == 0 else affinity}


def step(module, data):
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
    loss = module.training_step(data, 0)
    return loss, logged


def tiny_cfg(video_speech=None, **speech):
    return PretrainConfig.model_validate({"encoder": {"width": 4, "dim": 16}, "projection_dim": 8, "augment": False,
                                          "speech": {"spec_size": [32, 32], **speech},
                                          "video_speech": video_speech or {}})


def test_spectrogram_encoder_step_logs_every_term_and_reaches_both_encoders():
    torch.manual_seed(0)
    module = VideoSpeechModule(tiny_cfg(), audio_rate=16000)
    loss, logged = step(module, batch())
    loss.backward()
    assert set(logged) == {f"train/{k}" for k in ("loss", "contrastive", "contrastive_high", "contrastive_low",
                                                    "cls", "order_ce", "order_acc", "affinity_high",
                                                    "embedding_std", "pairs_admitted", "pace")}
    assert logged["train/affinity_high"] == 1.0 and 0 < logged["train/embedding_std"] < 1
    assert torch.isfinite(loss) and loss.item() > 0
    # α = β = γ = 1: the total is the sum of the three terms
    total = logged["train/contrastive"] + logged["train/cls"] + logged["train/order_ce"]
    assert logged["train/loss"] == pytest.approx(total, rel=1e-5)
    assert logged["train/order_ce"] == pytest.approx(__import__("math").log(12), abs=0.5)
    assert module.encoder.image_encoder.fc.weight.grad.abs().sum() > 0
    assert module.speech_encoder.fc.weight.grad.abs().sum() > 0


def test_low_affinity_batch_keeps_only_the_video_order_term():
    module = VideoSpeechModule(tiny_cfg(), audio_rate=16000)
    loss, logged = step(module, batch(affinity=0.1))
    assert logged["train/affinity_high"] == 0.0
    assert logged["train/contrastive"] == 0.0 and logged["train/cls"] == 0.0
    assert loss.item() == pytest.approx(logged["train/order_ce"], rel=1e-6)  # L_ord runs on every interval


def test_self_paced_admits_a_fraction_of_the_batch_at_initialisation():
    """The old pace in loss units (2.0) admitted 0 of 64 pairs at chance level (ln 65 ≈ 4.2)."""
    torch.manual_seed(0)
    for mode in ("spl_hard", "spl_linear"):
        module = VideoSpeechModule(tiny_cfg({"self_paced": mode}), audio_rate=16000)
        _, logged = step(module, batch(b=64))
        assert logged["train/contrastive"] > 2.0  # every pair's loss is above the old pace
        assert logged["train/pace"] == pytest.approx(0.5)
        assert logged["train/pairs_admitted"] == pytest.approx(32 / 64)
        module.on_train_epoch_end()
        _, logged = step(module, batch(b=64))
        assert logged["train/pace"] == pytest.approx(0.65)
        assert logged["train/pairs_admitted"] == pytest.approx(42 / 64)  # ⌈0.65 · 64⌉


def embeddings(module, data):
    """The embeddings ``training_step`` sees (no augmentation, train-mode BatchNorm on the same batch)."""
    with torch.no_grad():
        z_v, z_s = module.embed(data)
        return z_v, z_s, module.embed_speech(data["audio_hard_pos"]), module.embed_speech(data["audio_hard_neg"])


def test_gate_on_a_mixed_batch_is_the_high_affinity_pairs_alone():
    """Low-affinity pairs weigh 0 and their speech is no negative: L_cont is that of the high pairs alone,
    while L_ord still trains on the whole batch; 'none' counts every pair."""
    from usssl.methods.self_paced import video_speech_contrastive

    torch.manual_seed(0)
    data = batch(affinity=[0.9, 0.8, 0.6, 0.1, 0.0, 0.2])
    module = VideoSpeechModule(tiny_cfg(), audio_rate=16000)
    z_v, z_s, z_p, z_n = embeddings(module, data)
    high = slice(0, 3)
    alone = video_speech_contrastive(z_v[high], z_s[high], z_n[high], "infonce_hard", 0.1, True, y_pos=z_p[high])
    _, logged = step(module, data)
    assert logged["train/affinity_high"] == pytest.approx(0.5)
    assert logged["train/contrastive"] == pytest.approx(alone.mean().item(), rel=1e-4)
    assert logged["train/contrastive_high"] == pytest.approx(logged["train/contrastive"], rel=1e-6)
    assert logged["train/contrastive_low"] == 0.0 and logged["train/pairs_admitted"] == 0.5
    assert logged["train/order_ce"] > 0
    ungated = VideoSpeechModule(tiny_cfg({"self_paced": "none"}), audio_rate=16000)
    ungated.load_state_dict(module.state_dict())
    z_v, z_s, z_p, z_n = embeddings(ungated, data)
    every = video_speech_contrastive(z_v, z_s, z_n, "infonce_hard", 0.1, True, y_pos=z_p)
    _, logged = step(ungated, data)
    assert logged["train/contrastive"] == pytest.approx(every.mean().item(), rel=1e-4)
    assert logged["train/contrastive_low"] == pytest.approx(every[3:].sum().item() / 6, rel=1e-4)
    assert logged["train/pairs_admitted"] == 1.0


def test_the_hard_positive_changes_the_contrastive_and_correspondence_terms():
    torch.manual_seed(0)
    module = VideoSpeechModule(tiny_cfg(), audio_rate=16000)
    data = batch()
    _, before = step(module, data)
    data["audio_hard_pos"] = data["audio"].clone()  # the hard positive made the positive itself
    _, after = step(module, data)
    assert abs(before["train/contrastive"] - after["train/contrastive"]) > 1e-3
    assert abs(before["train/cls"] - after["train/cls"]) > 1e-4


def test_without_normalisation_the_temperature_is_honoured():
    """The old code forced τ = 1 whenever normalize was false."""
    from usssl.methods.self_paced import video_speech_contrastive

    torch.manual_seed(0)
    cfg = tiny_cfg({"normalize": False, "alpha": 0, "gamma": 0})
    cfg.temperature = 0.05
    module = VideoSpeechModule(cfg, audio_rate=16000)
    data = batch()
    z_v, z_s, z_p, z_n = embeddings(module, data)
    at = {t: video_speech_contrastive(z_v, z_s, z_n, "infonce_hard", t, False, y_pos=z_p).mean().item()
          for t in (0.05, 1.0)}
    logged = step(module, data)[1]["train/contrastive"]
    assert logged == pytest.approx(at[0.05], rel=1e-4)
    assert abs(at[0.05] - at[1.0]) > 0.01


def test_order_head_reads_grid_pooled_frame_pairs():
    from usssl.methods.order_heads import PairwiseOrderHead

    module = VideoSpeechModule(tiny_cfg(), audio_rate=16000)
    assert isinstance(module.order_head, PairwiseOrderHead)
    assert module.order_head.branch[0].in_features == 16 * 4**2  # 4·width channels × a 4 × 4 grid
    assert len(module.order_head.pairs) == 6
    loss, logged = step(module, batch())
    assert 0 <= logged["train/order_acc"] <= 1
    assert logged["train/order_ce"] == pytest.approx(__import__("math").log(12), abs=0.6)


def test_renamed_and_inconsistent_settings_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="pace_start was renamed pace_start_fraction"):
        tiny_cfg({"pace_start": 2.0})
    with pytest.raises(ValidationError, match="always L2-normalises"):
        tiny_cfg({"contrastive": "infonce", "normalize": False})
    with pytest.raises(ValidationError, match="nothing to learn"):
        tiny_cfg({"alpha": 0, "beta": 0, "gamma": 0})


def test_local_wav2vec2_speech_encoder(tmp_path):
    os.environ["HF_HUB_OFFLINE"] = "1"
    transformers = pytest.importorskip("transformers")
    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**tiny)).save_pretrained(tmp_path)
    module = VideoSpeechModule(tiny_cfg(encoder="wav2vec2", pretrained_path=str(tmp_path), freeze=True),
                               audio_rate=8000)  # resampled to 16 kHz inside
    loss, _ = step(module, batch(rate=8000))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in module.speech_encoder.parameters())  # frozen
    assert module.speech_head[0].weight.grad is not None


def test_wav2vec2_without_path_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs pretrained_path"):
        tiny_cfg(encoder="hubert")


def test_paper_yaml_builds_the_paper_network():
    from pathlib import Path

    from usssl.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "pipelines" / "paper" / "video_speech.yaml")
    module = VideoSpeechModule(cfg.stage("pretrain"), audio_rate=24000)
    assert module.encoder.out_dim == 2048 and module.speech_encoder.out_dim == 2048
    with torch.no_grad():
        spec = module.frontend(torch.randn(1, int(0.6 * 24000)))
    assert spec.shape == (1, 1, 256, 256)
    opt = module.configure_optimizers()
    assert isinstance(opt["optimizer"], torch.optim.SGD) and opt["lr_scheduler"]["scheduler"].step_size == 20
