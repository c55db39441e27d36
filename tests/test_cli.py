"""CLI exit codes and messages: user errors exit 2 (config) or 1 (data) without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from usssl.cli import main

REPO = Path(__file__).resolve().parents[1]
USSSL = [sys.executable, "-m", "usssl.cli"]


def test_validate_ok_and_typo_exit_codes(tmp_path, capsys):
    assert main(["validate", str(REPO / "pipelines" / "demo.yaml")]) == 0
    out = capsys.readouterr().out
    assert "valid — demo: ingest → pretrain → finetune → evaluate" in out
    assert f"checked: 0 input path(s) (relative ones from {Path.cwd()}), output folders" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - pretrain: {optimiser: {}}\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {bad}: stages[0].pretrain.optimiser: unknown key (did you mean 'optimizer'?)"


def test_run_missing_file_and_bad_override(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "pipeline file not found" in capsys.readouterr().err
    assert main(["validate", str(REPO / "pipelines" / "demo.yaml"), "--set", "pretrain.max_epochs=many"]) == 2
    assert "stages[1].pretrain.max_epochs" in capsys.readouterr().err


def test_schema_only_validates_a_yaml_meant_for_another_machine(capsys):
    paper = str(REPO / "pipelines" / "paper" / "cvrl.yaml")
    assert main(["validate", paper]) == 2  # its data.sources are a placeholder to fill in
    assert "data.sources[0]: /path/to/your/scans not found (looked for /path/to/your/scans)" in capsys.readouterr().err
    assert main(["validate", paper, "--schema-only"]) == 0
    assert "keys and values only (--schema-only)" in capsys.readouterr().out


def test_subprocess_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {devicez: 2}\n")
    proc = subprocess.run([*USSSL, "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "trainer.devicez: unknown key (did you mean 'devices'?)" in proc.stderr


@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["synth"], ["ingest"], ["datacard"], ["doctor"],
                                     ["predict"], ["export"], ["deidentify"]])
def test_help_for_every_command(command):
    proc = subprocess.run([*USSSL, *command, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "usage: usssl" in proc.stdout


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from usssl.cli import build_parser; build_parser(); "
            "print(','.join(m for m in ('torch', 'lightning', 'mlflow', 'monai', 'pydantic') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == ""


def test_doctor_reports_versions_and_tracking(capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "torch       2.14.1" in out and "opencv      " in out
    assert "threads     torch intra-op " in out and "OMP_NUM_THREADS=" in out
    assert "tracking    http://127.0.0.1:9 (NOT reachable: connection refused" in out
    assert "h264: yes" in out


def test_deidentify_command_writes_pseudonymous_copies_and_keeps_report_outside(tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(REPO / "tests" / "io"))
    from fixtures_dicom import ramp_frames, region, write_dicom

    monkeypatch.setenv("USSSL_SUBJECT_KEY", "cli-test")
    src = tmp_path / "src" / "Smith_John"
    src.mkdir(parents=True)
    write_dicom(src / "Smith_John_1.dcm", ramp_frames(), regions=[region((0, 0, 32, 24))])
    out = tmp_path / "shared"
    assert main(["deidentify", str(tmp_path / "src"), "--out", str(out)]) == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 1 and "Smith" not in str(files[0].relative_to(out))
    assert b"Smith" not in files[0].read_bytes()
    report = (tmp_path / "shared.deid-report.csv").read_text()
    assert "Smith_John/Smith_John_1.dcm" in report and ",ok," in report
    assert os.stat(tmp_path / "shared.deid-report.csv").st_mode & 0o777 == 0o600  # it names the sources
    assert "applied: PS3.15 Basic Profile (Table E.1-1, DICOM" in capsys.readouterr().out
    assert main(["deidentify", str(tmp_path / "src"), "--out", str(tmp_path / "kept"), "--shift-dates", "-7",
                 "--keep-descriptors"]) == 0
    printed = capsys.readouterr().out
    assert "retain-longitudinal-modified-dates: dates shifted by -7 days" in printed and "keep-descriptors" in printed
    assert main(["deidentify", str(tmp_path / "src"), "--out", str(out), "--report", str(out / "r.csv")]) == 2
    assert "keep it outside --out" in capsys.readouterr().err


def test_ingest_shard_merge_strict_and_datacard_commands(tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(REPO / "tests" / "data"))
    import fixtures_video as fx

    monkeypatch.setenv("USSSL_SUBJECT_KEY", "cli-ingest")
    monkeypatch.chdir(tmp_path)
    src, cache = tmp_path / "src", tmp_path / "study_cache"
    fx.make_corpus(src, n_subjects=3, seconds=1.0)
    (src / "videos" / "broken.mp4").write_bytes(b"")
    common = ["--out", str(cache), "--size", "16", "16", "--fps", "10", "--workers", "1"]
    assert main(["ingest", str(src), *common, "--shard", "1/2"]) == 0
    assert "usssl ingest --merge" in capsys.readouterr().out
    assert main(["ingest", "--merge", str(cache)]) == 1
    assert "part(s) 2/2 missing" in capsys.readouterr().err
    assert main(["ingest", str(src), *common, "--shard", "2/2"]) == 0
    assert main(["ingest", "--merge", str(cache)]) == 0
    assert "ingested 3 recording(s), 1 failed" in capsys.readouterr().out
    assert main(["ingest", "--merge", str(cache), "--strict"]) == 1
    assert "--strict: 1 input(s) failed" in capsys.readouterr().err
    assert main(["ingest", "--merge", str(cache), str(src)]) == 2
    assert main(["ingest", str(src)]) == 2
    assert "--out CACHE" in capsys.readouterr().err
    assert main(["ingest", str(src), *common, "--shard", "3/2"]) == 2

    assert main(["datacard", str(cache)]) == 0
    card = (tmp_path / "data_cards" / "study_cache.md").read_text()
    assert "- Subjects: 3 in total" in card and "- Speech coverage:" in card and "broken" not in card
    assert main(["datacard", str(cache), "--out", str(tmp_path / "cards" / "mine.md")]) == 0
    assert (tmp_path / "cards" / "mine.md").read_text() == card
    assert main(["datacard", str(tmp_path / "nowhere")]) == 1
    assert "not a usssl cache" in capsys.readouterr().err


def test_version_and_verbose_before_or_after_the_command(capsys):
    from importlib.metadata import version

    from usssl.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"usssl {version('usssl')}"
    parser = build_parser()
    demo = str(REPO / "pipelines" / "demo.yaml")
    assert parser.parse_args(["-v", "validate", demo]).verbose is True
    assert parser.parse_args(["validate", demo, "-v"]).verbose is True
    assert parser.parse_args(["validate", demo, "--verbose"]).verbose is True
    assert parser.parse_args(["validate", demo]).verbose is False


def test_validate_prints_the_resolved_config_and_the_json_schema(tmp_path, capsys):
    import json

    import yaml

    from usssl.config import load_config

    demo = REPO / "pipelines" / "demo.yaml"
    assert main(["validate", str(demo), "--print", "--set", "pretrain.max_epochs=3"]) == 0
    printed = capsys.readouterr().out
    raw = yaml.safe_load(printed)
    assert raw["trainer"]["gradient_clip_val"] == 5.0  # a default the YAML does not set
    assert raw["stages"][1]["pretrain"]["max_epochs"] == 3
    (tmp_path / "resolved.yaml").write_text(printed)
    assert load_config(tmp_path / "resolved.yaml") == load_config(demo, ["pretrain.max_epochs=3"])
    assert main(["validate", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "PipelineConfig" and {"name", "stages", "tracking"} <= set(schema["properties"])
    assert schema["properties"]["seed"]["maximum"] == 2**32 - 1


def _options():
    from usssl.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                yield name, p, action


def test_every_option_has_help_and_its_default_is_shown():
    from usssl.cli.options import shows_default

    missing, hidden = [], []
    for name, p, action in _options():
        if not action.help:
            missing.append(f"{name} {action.option_strings[0]}")
        text = p.formatter_class("usssl")._get_help_string(action) if action.help else ""
        if shows_default(action) and "default" not in text:
            hidden.append(f"{name} {action.option_strings[0]}")
    assert missing == [] and hidden == []
    helps = {f"{n} {a.option_strings[-1]}": p.formatter_class("usssl")._get_help_string(a) % vars(a)
             for n, p, a in _options()}
    assert helps["synth --subjects"].endswith("(default: 12)") and helps["synth --seed"].endswith("(default: 0)")
    assert "(default: from --config, else 64 64)" in helps["ingest --size"]


def test_ingest_help_defaults_are_the_ingest_config_defaults():
    from usssl.cli.options import INGEST_DEFAULTS
    from usssl.config import IngestConfig

    defaults = IngestConfig()
    assert INGEST_DEFAULTS == {"size": tuple(defaults.size), "fps": defaults.fps, "workers": defaults.workers}


def test_screenshot_script_skips_with_a_reason_without_chromium(monkeypatch, capsys, tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    import mlflow_screenshots

    monkeypatch.setattr(mlflow_screenshots, "CHROMIUM", str(tmp_path / "no-chromium"))
    assert mlflow_screenshots.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(f"skipped: {tmp_path / 'no-chromium'} not found")


def test_screenshot_script_skips_with_a_reason_without_chromedriver(monkeypatch, capsys, tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    import mlflow_screenshots

    monkeypatch.setattr(mlflow_screenshots, "CHROMIUM", sys.executable)  # a file that exists
    monkeypatch.setattr(mlflow_screenshots, "CHROMEDRIVER", str(tmp_path / "no-driver"))
    assert mlflow_screenshots.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"skipped: {tmp_path / 'no-driver'} not found") and "chromium-driver" in out


def test_screenshot_pipeline_is_valid_with_two_folds_and_six_subjects():
    from usssl.config import load_config

    cfg = load_config(REPO / "tools" / "mlflow_screenshots.yaml")
    assert cfg.name == "demo" and cfg.data.synth.subjects == 6
    assert cfg.stage("finetune").cv == "kfold" and cfg.stage("finetune").folds == 2
