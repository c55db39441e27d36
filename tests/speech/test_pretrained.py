"""wav2vec2 / HuBERT from a local directory the test saves itself (tiny config, random weights)."""

import os

import pytest
import torch

from usssl.errors import ConfigError

os.environ["HF_HUB_OFFLINE"] = "1"  # set before transformers is imported: never download
os.environ["TRANSFORMERS_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers", reason="pip install transformers")

from usssl.speech.pretrained import load_speech_model  # noqa: E402

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)
MODELS = {
    "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
    "hubert": (transformers.HubertConfig, transformers.HubertModel),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{kind: directory} of tiny random-weight models written with save_pretrained."""
    torch.manual_seed(0)
    out = {}
    for kind, (config_cls, model_cls) in MODELS.items():
        directory = tmp_path_factory.mktemp(kind)
        model_cls(config_cls(**TINY)).save_pretrained(directory)
        out[kind] = directory
    return out


def n_trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_loads_and_pools_to_one_vector(saved, kind):
    enc = load_speech_model(kind, saved[kind], freeze=True)
    assert type(enc.backbone).__name__ == MODELS[kind][1].__name__
    assert enc.out_dim == 32
    enc.eval()
    audio = torch.randn(3, 9600)  # 0.6 s at 16 kHz
    z = enc(audio)
    assert z.shape == (3, 32) and torch.isfinite(z).all()
    # the saved random weights were loaded, not re-initialised
    reference = MODELS[kind][1].from_pretrained(saved[kind], local_files_only=True).eval()
    x = (audio - audio.mean(1, keepdim=True)) / (audio.std(1, keepdim=True) + 1e-7)
    expected = reference(x).last_hidden_state.mean(1)
    assert torch.allclose(z, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_freeze_semantics(saved, kind):
    total = n_trainable(load_speech_model(kind, saved[kind], freeze=False))
    assert total > 0
    assert n_trainable(load_speech_model(kind, saved[kind], freeze=True)) == 0
    assert n_trainable(load_speech_model(kind, saved[kind], freeze=0)) == 0
    top1 = load_speech_model(kind, saved[kind], freeze=1)
    layers = top1.backbone.encoder.layers
    assert n_trainable(top1) == n_trainable(layers[1]) == sum(p.numel() for p in layers[1].parameters())
    assert n_trainable(layers[0]) == 0
    top2 = load_speech_model(kind, saved[kind], freeze=2)
    assert n_trainable(top2) == sum(p.numel() for p in layers.parameters())
    assert 0 < n_trainable(top2) < total  # the conv feature encoder stays frozen
    with pytest.raises(ConfigError, match="between 0 and 2"):
        load_speech_model(kind, saved[kind], freeze=3)


def test_partial_unfreeze_trains_only_the_top_layer(saved):
    enc = load_speech_model("hubert", saved["hubert"], freeze=1)
    enc(torch.randn(2, 4000)).pow(2).sum().backward()
    layers = enc.backbone.encoder.layers
    assert all(p.grad is not None for p in layers[1].parameters())
    assert all(p.grad is None for p in layers[0].parameters())


def test_hub_name_error_says_how_to_supply_weights():
    with pytest.raises(ConfigError) as err:
        load_speech_model("wav2vec2", "facebook/wav2vec2-base")
    message = str(err.value)
    assert "'facebook/wav2vec2-base' does not exist" in message
    assert "hub name" in message and "never downloads" in message
    assert "AutoModel.from_pretrained('facebook/wav2vec2-base').save_pretrained('DIR')" in message
    assert "path in the config" in message


def test_missing_directory_and_wrong_kind(saved, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_speech_model("hubert", tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match="has no config.json"):
        load_speech_model("hubert", tmp_path)
    with pytest.raises(ConfigError, match="describes a 'wav2vec2' model"):
        load_speech_model("hubert", saved["wav2vec2"])
    with pytest.raises(ConfigError, match="kind must be one of"):
        load_speech_model("whisper", saved["wav2vec2"])
