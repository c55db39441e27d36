"""Pipeline YAML validation: errors name the file, the key path and what was expected."""

from pathlib import Path

import pytest

from usssl.config import PipelineConfig, apply_override, load_config
from usssl.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_misspelt_key_suggests_the_right_one(tmp_path):
    path = write(tmp_path, "stages:\n  - ingest: {}\n  - pretrain:\n      optimiser: {lr: 0.1}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: stages[1].pretrain.optimiser: unknown key (did you mean 'optimizer'?)"
    assert err.value.exit_code == 2


def test_wrong_type_and_literal_name_key_and_expectation(tmp_path):
    path = write(tmp_path, "trainer: {precision: 15}\nstages:\n  - pretrain: {max_epochs: two}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert any(line.startswith(f"{path}: stages[0].pretrain.max_epochs: ") and "integer" in line for line in lines)
    assert any(line.startswith(f"{path}: trainer.precision: got 15; expected ") for line in lines)


def test_unknown_top_level_key_lists_valid_keys_when_nothing_is_close(tmp_path):
    path = write(tmp_path, "zzzz: 1\n")
    with pytest.raises(ConfigError, match=r"zzzz: unknown key \(valid keys: name, output_dir"):
        load_config(path)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="pipeline file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"p.yaml: line 2, column 1: not valid YAML: .*\(while parsing a flow "):
        load_config(write(tmp_path, "stages: [\n"))


def test_stage_must_have_one_key(tmp_path):
    with pytest.raises(ConfigError, match=r"stages\[0\]: .*each stage is one of"):
        load_config(write(tmp_path, "stages:\n  - {ingest: {}, pretrain: {}}\n"))


def test_label_fraction_out_of_range(tmp_path):
    with pytest.raises(ConfigError, match=r"stages\[0\]\.finetune: .*label fraction 1.5"):
        load_config(write(tmp_path, "stages:\n  - finetune: {label_fractions: [0.1, 1.5]}\n"))


def test_overrides_by_stage_name_and_by_index(tmp_path):
    path = write(tmp_path, "stages:\n  - ingest\n  - pretrain: {max_epochs: 3}\n")
    cfg = load_config(path, ["pretrain.max_epochs=7", "stages[0].ingest.size=[32, 48]", "seed=5"])
    assert cfg.stage("pretrain").max_epochs == 7
    assert cfg.stage("ingest").size == (32, 48)
    assert cfg.seed == 5


def test_override_errors_are_config_errors(tmp_path):
    path = write(tmp_path, "stages:\n  - ingest\n")
    with pytest.raises(ConfigError, match="has no 'pretrain' stage"):
        load_config(path, ["pretrain.max_epochs=2"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(path, ["seed"])
    with pytest.raises(ConfigError, match=r"stages\[0\]\.ingest\.sizee: unknown key \(did you mean 'size'\?\)"):
        load_config(path, ["ingest.sizee=[1,2]"])


def test_apply_override_creates_nested_mapping():
    raw = {}
    apply_override(raw, "tracking.experiment=abc")
    assert raw == {"tracking": {"experiment": "abc"}}


def test_tracking_uri_default_and_env(tmp_path, monkeypatch):
    cfg = PipelineConfig(output_dir=str(tmp_path / "out"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cfg.tracking_uri == f"sqlite:///{(tmp_path / 'out').resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert cfg.tracking_uri == "http://127.0.0.1:1"


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "pipelines").glob("**/*.yaml") if p.parent.name != "compare"),
                         ids=lambda p: p.name)
def test_shipped_pipelines_validate(path):
    cfg = load_config(path)
    assert cfg.stages, f"{path} has no stages"


def test_shipped_compare_inputs_validate(tmp_path):
    from usssl.cli.compare import compare_pipeline

    raw = compare_pipeline(REPO / "pipelines/compare/encoders.yaml", REPO / "pipelines/compare/tasks.yaml", tmp_path)
    body = PipelineConfig.model_validate(raw).stage("compare")
    assert [e.source for e in body.encoders] == ["random", "supervised", "recipe", "recipe"]
    assert [t.kind for t in body.tasks] == ["classification", "frame_gap", "classification"] and body.folds == 3


def test_configuration_reference_is_current():
    from usssl.config import reference_markdown

    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == reference_markdown(), "regenerate: usssl validate --reference > docs/configuration.md"
    assert "| `optimizer` | OptimizerConfig |" in doc and "## `stages[].pretrain.speech`" in doc
    assert "is read from the **working directory**" in doc and "## What is refused" in doc  # the paths rule


def test_several_pretrain_stages_need_names_and_inits_must_exist(tmp_path):
    from usssl.config import PipelineConfig

    pre = {"pretrain": {"method": "cvrl"}}
    with pytest.raises(ValueError, match="distinct names"):
        PipelineConfig.model_validate({"stages": [pre, pre]})
    cfg = PipelineConfig.model_validate({"output_dir": str(tmp_path), "stages": [
        pre, {"pretrain": {"method": "cvrl", "name": "cvrl_long"}}, {"finetune": {"inits": ["random", "cvrl_long"]}}]})
    assert cfg.pretrain_names() == ["cvrl", "cvrl_long"]
    assert cfg.pretrain_dir("cvrl") == tmp_path / "pretrain"
    assert cfg.pretrain_dir("cvrl_long") == tmp_path / "pretrain-cvrl_long"
    with pytest.raises(ValueError, match="unknown init 'simclr'"):
        PipelineConfig.model_validate({"stages": [pre, {"finetune": {"inits": ["simclr"]}}]})
    with pytest.raises(ValueError, match="exclude_fold"):
        PipelineConfig.model_validate({"stages": [{"pretrain": {"exclude_fold": 1}}, {"finetune": {}}]})


def test_speech_vad_choice_is_validated():
    from usssl.config import SpeechConfig
    from usssl.data.datasets import AudioVisualDataset

    assert SpeechConfig().vad == "energy" and SpeechConfig(vad="silero").vad == "silero"
    with pytest.raises(Exception, match="vad"):
        SpeechConfig(vad="webrtc")
    with pytest.raises(ValueError, match="vad must be"):
        AudioVisualDataset(None, [], split=None, vad="webrtc")
