"""VideoSpeechModule: one training step with each speech encoder kind; the affinity gate."""

import os

import pytest
import torch

from usssl.config import PretrainConfig
from usssl.methods.video_speech import VideoSpeechModule


def batch(b=6, rate=16000, affinity=1.0):
    g = torch.Generator().manual_seed(0)
    return {"video": torch.rand(b, 1, 1, 32, 32, generator=g),
            "audio": torch.randn(b, int(0.6 * rate), generator=g) * 0.1,
            "audio_hard_neg": torch.randn(b, int(0.6 * rate), generator=g) * 0.1,
            "order_clip": torch.rand(b, 1, 4, 32, 32, generator=g),
            "affinity": torch.full((b,), affinity)}


def step(module, data):
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
    loss = module.training_step(data, 0)
    return loss, logged


def tiny_cfg(**speech):
    return PretrainConfig.model_validate({"encoder": {"width": 4, "dim": 16}, "projection_dim": 8,
                                          "speech": {"spec_size": [32, 32], **speech}})


def test_spectrogram_encoder_step_logs_every_term_and_reaches_both_encoders():
    torch.manual_seed(0)
    module = VideoSpeechModule(tiny_cfg(), audio_rate=16000)
    loss, logged = step(module, batch())
    loss.backward()
    assert set(logged) == {f"train/{k}" for k in ("loss", "contrastive", "cls", "order_ce", "order_acc",
                                                    "affinity_high", "embedding_std", "pairs_admitted", "pace")}
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


def test_self_paced_option_logs_a_growing_pace():
    cfg = tiny_cfg()
    cfg.video_speech.self_paced = "spl_hard"
    cfg.video_speech.pace_start = 0.5
    module = VideoSpeechModule(cfg, audio_rate=16000)
    _, logged = step(module, batch())
    assert logged["train/pace"] == pytest.approx(0.5) and logged["train/pairs_admitted"] < 1.0
    module.on_train_epoch_end()
    _, logged = step(module, batch())
    assert logged["train/pace"] == pytest.approx(0.5 * 1.3)


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
