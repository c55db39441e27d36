"""Robust under faults (issue 12): settings that would run but mean nothing, wrong paths, a machine
without the asked-for accelerator, a tracking server that is down, a full disk and Ctrl-C are each
one line that names the file or key and what to do — before any work — and never a traceback.

Every input is generated here (no committed binaries); nothing needs a GPU or the network.
"""

from __future__ import annotations

import errno
import http.server
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from usssl.cli import main
from usssl.config import (PipelineConfig, check_inputs, check_machine, check_output_dir, check_outputs, load_config,
                          os_error_message, parse_yaml)
from usssl.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
MINIMAL = "stages: [ingest]\n"


def write(tmp_path: Path, text: str | bytes, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def config_error(path: Path, overrides: list[str] | None = None) -> str:
    """The message of the ConfigError that loading ``path`` raises (and it is one line per problem)."""
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    assert err.value.exit_code == 2
    return str(err.value)


# ----------------------------------------------------------------------------- the YAML file itself
def test_empty_and_comment_only_files_and_no_stages_are_refused(tmp_path):
    for text in ("", "\n\n", "# just a comment\n"):
        assert "the file is empty" in config_error(write(tmp_path, text))
    for text in ("{}\n", "name: x\n", "stages: []\n"):
        message = config_error(write(tmp_path, text))
        assert message.endswith("(see pipelines/demo.yaml)") and "stages: no stages" in message


def test_a_key_given_twice_names_its_key_path_and_both_lines(tmp_path):
    text = "seed: 1\nstages:\n  - pretrain:\n      batch_size: 8\n      max_epochs: 2\n      batch_size: 16\n"
    assert config_error(write(tmp_path, text)) == (
        f"{tmp_path / 'p.yaml'}: stages[0].pretrain.batch_size: the key 'batch_size' is given twice (lines 4 and 6); "
        "YAML would silently keep the last one: delete one")
    assert "'seed' is given twice (lines 1 and 2)" in config_error(write(tmp_path, "seed: 1\nseed: 2\n" + MINIMAL))
    assert "both on line 1" in config_error(write(tmp_path, "trainer: {devices: 1, devices: 2}\n" + MINIMAL))
    # anchors, aliases and merge keys are fine while they stay small
    cfg = load_config(write(tmp_path, "stages:\n  - finetune: {optimizer: &opt {name: sgd, lr: 0.01}}\n"
                                      "  - pretrain: {optimizer: {<<: *opt, lr: 0.5}}\n"))
    assert cfg.stage("pretrain").optimizer.lr == 0.5 and cfg.stage("pretrain").optimizer.name == "sgd"


def test_alias_bomb_self_reference_and_deep_nesting_are_refused_quickly_and_briefly(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]  # 10**9 values once expanded
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    start = time.monotonic()
    message = config_error(write(tmp_path, "\n".join(lines) + "\n" + MINIMAL))
    assert time.monotonic() - start < 5 and len(message) < 300
    assert "more than 100,000 values once its anchors and aliases" in message
    assert "refers to the value that contains it" in config_error(write(tmp_path, "a: &a [1, *a]\n" + MINIMAL))
    deep = config_error(write(tmp_path, "a: " + "[" * 300 + "]" * 300 + "\n"))
    assert "nested more than 64 levels deep" in deep and len(deep) < 300


def test_binary_non_utf8_folder_and_huge_files_are_refused_before_parsing(tmp_path):
    binary = write(tmp_path, bytes(range(256)) * 4, "scan.dcm")
    assert config_error(binary) == f"{binary}: is not a text file (it holds binary data); give a pipeline YAML such as " \
                                   "pipelines/demo.yaml"
    assert "is not UTF-8 text (byte 0xe9 on line 2)" in config_error(write(tmp_path, b"stages: [ingest]\nname: caf\xe9\n"))
    assert "is a folder; give the pipeline YAML file" in config_error(tmp_path)
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as f:
        f.truncate(11_000_000)  # sparse: nothing is really written
    assert "far too large for a pipeline YAML" in config_error(huge)
    assert "pipeline file not found (looked for " in config_error(tmp_path / "missing.yaml")


def test_syntax_errors_are_one_line_with_position_and_hints(tmp_path):
    message = config_error(write(tmp_path, "stages: [ingest\n"))
    assert "\n" not in message and ": line 2, column 1: not valid YAML: " in message
    assert message.endswith("(while parsing a flow sequence on line 1)")
    assert "YAML indents with spaces, not tabs" in config_error(write(tmp_path, "stages:\n\t- ingest\n"))


def test_bad_set_values_are_config_errors(tmp_path):
    path = write(tmp_path, MINIMAL)
    message = config_error(path, ["seed=["])
    assert message.startswith("--set seed=[: not valid YAML: ") and "\n" not in message
    assert "quote text that holds" in message
    assert "the key 'a' is given twice" in config_error(path, ["name={a: 1, a: 2}"])
    assert load_config(write(tmp_path, "tracking:\n" + MINIMAL), ["tracking.experiment=x"]).tracking.experiment == "x"


# ----------------------------------------------------------------------------- meaningless values
@pytest.mark.parametrize("override, where", [
    ("pretrain.temperature=.inf", "stages[0].pretrain.temperature"),
    ("pretrain.optimizer.lr=.nan", "stages[0].pretrain.optimizer.lr"),
    ("pretrain.cvrl.crop_area=[0.3, .inf]", "stages[0].pretrain.cvrl.crop_area[1]"),
    ("finetune.label_fractions=[.inf]", "stages[1].finetune.label_fractions[0]"),
    ("ingest.fps=-.inf", "stages[2].ingest.fps"),
    ("data.synth.duration_s=.nan", "data.synth.duration_s"),
])
def test_non_finite_numbers_are_refused_everywhere(tmp_path, override, where):
    path = write(tmp_path, "stages: [pretrain, finetune, ingest]\n")
    message = config_error(path, [override])
    assert message.startswith(f"{path}: {where}: must be a finite number, got ") and "\n" not in message


@pytest.mark.parametrize("stages, error", [
    ("[ingest, pretrain, finetune, evaluate, finetune]", "stages[2] and stages[4]: 2 'finetune' stages"),
    ("[ingest, ingest]", "stages[0] and stages[1]: 2 'ingest' stages"),
    ("[finetune, evaluate, evaluate, evaluate]", "stages[1] and stages[2] and stages[3]: 3 'evaluate' stages"),
    ("[finetune, saliency, export, saliency]", "2 'saliency' stages"),
    ("[pretrain, pretrain]", "pretrain stages need distinct names"),
])
def test_a_stage_kind_that_cannot_repeat_is_refused(tmp_path, stages, error):
    message = config_error(write(tmp_path, f"stages: {stages}\n"))
    assert message.startswith(f"{tmp_path / 'p.yaml'}: ") and error in message and "<top level>" not in message


def test_pretrain_may_repeat_with_distinct_names(tmp_path):
    cfg = load_config(write(tmp_path, "stages:\n  - pretrain\n  - pretrain: {method: cvrl, name: cvrl_b}\n  - finetune\n"))
    assert cfg.pretrain_names() == ["video_speech", "cvrl_b"]


@pytest.mark.parametrize("override, error", [
    ("ingest.size=[0, 0]", "stages[0].ingest.size: height and width must be 4 … 4096 pixels, got [0, 0]"),
    ("ingest.size=[-64, 64]", "got [-64, 64]"),
    ("ingest.size=[64, 100000]", "4 … 4096"),
    ("ingest.crop=[10, 10, 5, 50]", "0 <= x0 < x1 and 0 <= y0 < y1, got [10, 10, 5, 50]"),
    ("data.synth.size=[0, 0]", "data.synth.size: frame height and width must be even numbers of pixels in 48 … 2048"),
    ("data.synth.size=[97, 96]", "got [97, 96]"),
    ("pretrain.speech.spec_size=[0, 64]", "stages[1].pretrain.speech.spec_size: both sides must be 8 … 4096"),
])
def test_sizes_of_zero_or_less_are_refused(tmp_path, override, error):
    assert error in config_error(write(tmp_path, "stages: [ingest, pretrain]\n"), [override])


@pytest.mark.parametrize("override, error", [
    ("seed=-1", "seed: must be 0 … 4294967295 (got -1)"),
    (f"seed={2**32}", "seed: must be 0 … 4294967295 (got 4294967296)"),
    ("data.synth.seed=-5", "data.synth.seed: must be 0 … 4294967295"),
    ("ingest.split.seed=99999999999", "stages[0].ingest.split.seed: must be 0 … 4294967295"),
    ("pretrain.max_epochs=1.0e+12", "stages[1].pretrain.max_epochs: must be 1 … 10000 (got 1000000000000.0)"),
    ("pretrain.max_steps=0", "0 steps would train nothing"),
    ("pretrain.max_steps=100000000", "stages[1].pretrain.max_steps: must be -1 … 10000000"),
    ("pretrain.batch_size=1000000000", "stages[1].pretrain.batch_size: must be 2 … 65536"),
    ("pretrain.pairs_per_epoch=1000000000", "must be 16 … 10000000"),
    ("finetune.max_epochs=10001", "stages[2].finetune.max_epochs: must be 1 … 10000"),
    ("finetune.linear_epochs=1000000", "must be 1 … 10000"),
    ("finetune.optimizer.milestones=[20, 100000]", "milestones[1]"),
    ("saliency.epochs=100000", "stages[3].saliency.epochs: must be 1 … 10000"),
    ("trainer.devices=abc", "trainer.devices: got 'abc'; expected a number of devices"),
    ("trainer.devices=0", "trainer.devices: got 0;"),
    ("trainer.devices='0,x'", "got '0,x'"),
    ("trainer.devices=[]", "got []"),
])
def test_seeds_counts_and_devices_out_of_range_are_refused(tmp_path, override, error):
    message = config_error(write(tmp_path, "stages: [ingest, pretrain, finetune, saliency]\n"), [override])
    assert error in message and "\n" not in message


def test_values_at_the_bounds_and_every_device_form_are_accepted(tmp_path):
    path = write(tmp_path, "stages: [ingest, pretrain]\n")
    for override in (f"seed={2**32 - 1}", "seed=0", "pretrain.max_epochs=10000", "pretrain.max_steps=-1",
                     "trainer.devices=auto", "trainer.devices=-1", "trainer.devices=2", "trainer.devices='0,1'",
                     "trainer.devices=[0, 1]", "ingest.size=[8, 10]", "ingest.crop=[0, 0, 10, 10]"):
        assert [e.kind for e in load_config(path, [override]).stages] == ["ingest", "pretrain"]
    assert load_config(path, [f"seed={2**32 - 1}"]).seed == 2**32 - 1
    assert load_config(path, ["ingest.size=[8, 10]"]).stage("ingest").size == (8, 10)


def test_a_long_bad_value_is_cut_in_the_message(tmp_path):
    message = config_error(write(tmp_path, MINIMAL), ["trainer.precision=" + "x" * 5000])
    assert len(message) < 400


# ----------------------------------------------------------------------------- input paths
def test_missing_relative_source_names_the_resolved_path_and_the_working_directory(tmp_path, monkeypatch):
    study = tmp_path / "study"
    (study / "data" / "convex").mkdir(parents=True)
    (study / "data" / "convex" / "a.mp4").write_bytes(b"x")
    (study / "pipelines").mkdir()
    path = write(study / "pipelines", "data: {sources: [../data/convex], labels_csv: labels.csv}\nstages: [ingest]\n")
    monkeypatch.chdir(study / "pipelines")  # from here ../data/convex is right; labels.csv is not
    with pytest.raises(ConfigError) as err:
        check_inputs(load_config(path), path)
    assert str(err.value) == (f"{path}: data.labels_csv: labels.csv not found (looked for {study / 'pipelines' / 'labels.csv'}); "
                              f"a relative path is read from the working directory {study / 'pipelines'}, not from "
                              "the YAML's folder")
    monkeypatch.chdir(tmp_path)
    rel = path.relative_to(tmp_path)
    with pytest.raises(ConfigError) as err:
        check_inputs(load_config(rel), rel)
    first = str(err.value).splitlines()[0]
    assert first.startswith(f"{rel}: data.sources[0]: ../data/convex not found (looked for {tmp_path.parent / 'data' / 'convex'})")
    assert f"(it does exist there: {study / 'data' / 'convex'}; give that absolute path or run usssl from " \
           f"{study / 'pipelines'})" in first
    assert len(str(err.value).splitlines()) == 2  # every wrong path, one line each


def test_wrong_kind_of_input_and_redacted_placeholders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scans").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "scans" / "a.dcm").write_bytes(b"x")
    (tmp_path / "w2v").mkdir()
    text = ("data: {sources: [scans, empty, '<redacted path>'], gaze_csv: scans}\nstages:\n  - ingest\n"
            "  - pretrain: {speech: {encoder: wav2vec2, pretrained_path: w2v}}\n")
    with pytest.raises(ConfigError) as err:
        check_inputs(load_config(write(tmp_path, text)), "p.yaml")
    lines = str(err.value).splitlines()
    assert lines[0] == f"p.yaml: data.sources[1]: {tmp_path / 'empty'} is an empty folder; nothing to ingest"
    assert lines[1].startswith("p.yaml: data.sources[2]: '<redacted path>' is a placeholder from a logged config")
    assert lines[2] == f"p.yaml: data.gaze_csv: {tmp_path / 'scans'} is a folder; give the CSV file"
    assert lines[3] == (f"p.yaml: stages[1].pretrain.speech.pretrained_path: {tmp_path / 'w2v'} has no config.json; "
                        "give the folder written by save_pretrained")
    ok = load_config(write(tmp_path, "data: {sources: [scans]}\nstages: [ingest]\n"))
    assert check_inputs(ok, "p.yaml") == [tmp_path / "scans"]


def test_a_tilde_is_named_because_nothing_expands_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, "output_dir: ~/runs/x\ndata: {sources: [~/scans]}\nstages: [ingest]\n"))
    with pytest.raises(ConfigError, match=r"data.sources\[0\]: ~/scans not found .*'~' is not expanded"):
        check_inputs(cfg, "p.yaml")
    with pytest.raises(ConfigError, match=r"^p.yaml: output_dir: ~/runs/x; '~' is not expanded"):
        check_outputs(cfg, "p.yaml")


def test_without_an_ingest_stage_the_cache_is_an_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, "output_dir: out\ndata: {sources: [nowhere]}\nstages: [finetune]\n"))
    with pytest.raises(ConfigError, match=r"output_dir \(its cache/ folder\): out/cache not found .*reads an existing "
                                          "cache"):
        check_inputs(cfg, "p.yaml")  # and the sources, which no stage reads, are not checked


# ----------------------------------------------------------------------------- output folders
@pytest.mark.parametrize("output_dir, error", [
    ("/proc/usssl-test", "is inside /proc, the kernel's pseudo-filesystem"),
    ("/sys/kernel/usssl", "is inside /sys"),
    ("afile", "exists and is a file, not a folder"),
    ("afile/run", "is a file, so the folder"),
])
def test_impossible_output_folders_are_refused(tmp_path, monkeypatch, output_dir, error):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=f"^p.yaml: output_dir: .*{error}"):
        check_outputs(load_config(write(tmp_path, f"output_dir: {output_dir}\n{MINIMAL}")), "p.yaml")


def test_unwritable_or_full_output_folder_is_refused_and_the_check_leaves_nothing(tmp_path, monkeypatch):
    import usssl.config.preflight as preflight

    (tmp_path / "runs").mkdir()
    before = sorted(tmp_path.rglob("*"))
    assert check_output_dir(tmp_path / "runs" / "a" / "b", "output_dir") == tmp_path / "runs" / "a" / "b"
    assert sorted(tmp_path.rglob("*")) == before  # the write test removed its folder, created nothing else

    def denied(**_):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(preflight.tempfile, "mkdtemp", denied)  # root may write anywhere: simulate it
    with pytest.raises(ConfigError) as err:
        check_output_dir(tmp_path / "runs" / "new", "--out")
    assert str(err.value) == (f"--out: cannot write in {tmp_path / 'runs'} (Permission denied), so "
                              f"{tmp_path / 'runs' / 'new'} cannot be created; choose a folder you can write to, "
                              "or ask for write access")
    monkeypatch.undo()
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: type("U", (), {"free": 5 * 2**20})())
    with pytest.raises(ConfigError, match=r"only 5 MB free on the disk that holds .*df -h"):
        check_output_dir(tmp_path, "output_dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_folder_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="Permission denied"):
        check_output_dir(tmp_path / "ro" / "out", "output_dir")


def test_sqlite_store_outside_output_dir_is_checked_too(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "afile").write_text("x")
    cfg = load_config(write(tmp_path, f"output_dir: {tmp_path / 'out'}\ntracking: {{uri: 'sqlite:///{tmp_path}/afile/"
                                      f"m.db'}}\n{MINIMAL}"))
    with pytest.raises(ConfigError, match="tracking.uri: .*afile exists and is a file"):
        check_outputs(cfg, "p.yaml")


# ----------------------------------------------------------------------------- the machine
@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has ``n`` CUDA GPUs (0: none), whatever it really has."""
    import torch

    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Test GPU")
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    return set_count


@pytest.mark.parametrize("n_gpu, trainer, error", [
    (0, {"accelerator": "gpu"}, "trainer.accelerator: 'gpu', but this machine has no usable CUDA GPU"),
    (0, {"accelerator": "cuda", "devices": 2}, "no usable CUDA GPU"),
    (2, {"accelerator": "gpu", "devices": 4}, "trainer.devices: 4 asks for 4 GPUs, but this machine has 2 (indices 0 … 1)"),
    (2, {"accelerator": "gpu", "devices": "0,3"}, "asks for GPU(s) [3]"),
    (1, {"accelerator": "auto", "devices": [0, 1]}, "asks for GPU(s) [1]"),
    (0, {"accelerator": "mps"}, "trainer.accelerator: 'mps', but Apple's Metal GPU is not available here"),
    (0, {"accelerator": "cpu", "devices": 1000}, "1000 processes on the CPU, but this machine has"),
    (0, {"accelerator": "cpu", "devices": [0]}, "lists device indices, but on the CPU"),
])
def test_an_accelerator_or_device_count_the_machine_lacks_is_refused(gpus, n_gpu, trainer, error):
    gpus(n_gpu)
    cfg = PipelineConfig.model_validate({"trainer": trainer})
    with pytest.raises(ConfigError) as err:
        check_machine(cfg.trainer, "p.yaml")
    assert str(err.value).startswith("p.yaml: ") and error in str(err.value)


def test_what_the_machine_has_is_accepted(gpus):
    gpus(2)
    assert check_machine(PipelineConfig.model_validate({"trainer": {"accelerator": "gpu", "devices": -1}}).trainer) \
        == "gpu: 2 of 2 GPU(s) (Test GPU)"
    assert check_machine(PipelineConfig.model_validate({"trainer": {"accelerator": "auto", "devices": "1,"}}).trainer) \
        .startswith("gpu: 1 of 2")
    gpus(0)
    assert check_machine(PipelineConfig().trainer).startswith("cpu: 1 process(es) of ")


def test_validate_does_not_check_the_machine_and_stays_light(tmp_path):
    """A GPU YAML is valid on a laptop; `validate` of a pipeline without a cache never imports torch."""
    path = write(tmp_path, f"output_dir: {tmp_path / 'out'}\ntrainer: {{accelerator: gpu, devices: 8}}\n"
                           "stages: [ingest, pretrain]\n")
    code = ("import sys; from usssl.cli import main; rc = main(['validate', sys.argv[1]]); "
            "print(rc, [m for m in ('torch', 'lightning', 'mlflow') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=ENV)
    assert proc.stdout.strip().splitlines()[-1] == "0 []", proc.stderr
    assert "batch sizes: when pretraining starts (no cache yet)" in proc.stdout


# ----------------------------------------------------------------------------- the tracking server
@pytest.fixture
def http_server():
    """A local HTTP server answering every GET with ``status`` (set by the test)."""
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            state["path"], state["auth"] = self.path, self.headers.get("Authorization")
            self.send_response(state["status"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tracking_server_that_is_down_or_silent_or_not_mlflow_is_refused_within_seconds(http_server, monkeypatch):
    from usssl.engine.tracking import Tracker, check_tracking_server, tracking_problem

    assert tracking_problem(http_server["url"]) is None and http_server["path"] == "/health"
    http_server["status"] = 401  # behind a login: reachable, MLflow handles the credentials
    assert tracking_problem(http_server["url"].replace("http://", "http://ann:s3cret@")) is None
    assert http_server["auth"].startswith("Basic ")
    http_server["status"] = 404
    assert "not an MLflow server" in tracking_problem(http_server["url"])
    http_server["status"] = 503
    assert "HTTP 503" in tracking_problem(http_server["url"])
    down = f"http://ann:s3cret@127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        check_tracking_server(down, source="p.yaml")
    assert time.monotonic() - start < 3
    assert str(err.value).startswith(f"p.yaml: tracking.uri: the MLflow tracking server http://127.0.0.1:")
    assert "connection refused" in str(err.value) and "s3cret" not in str(err.value)
    assert "tracking.enabled: false" in str(err.value)
    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        start = time.monotonic()
        assert tracking_problem(f"http://127.0.0.1:{silent.getsockname()[1]}", 0.5) == "no answer within 0.5 s"
        assert time.monotonic() - start < 3
    monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
    with pytest.raises(ConfigError, match="^MLFLOW_TRACKING_URI: the MLflow tracking server"):
        Tracker(PipelineConfig())  # the library fails fast too, not only the CLI


def test_every_run_logs_its_thread_counts_and_versions(tmp_path, monkeypatch, caplog):
    import torch
    from mlflow.tracking import MlflowClient

    from usssl.engine.tracking import Tracker, package_versions

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tracker = Tracker(PipelineConfig.model_validate({"output_dir": str(tmp_path), "stages": ["ingest"]}))
    with caplog.at_level(logging.INFO, logger="usssl.engine.tracking"), tracker.pipeline_run():
        pass
    assert f"torch intra-op {torch.get_num_threads()}" in caplog.text and "OMP_NUM_THREADS=1" in caplog.text
    client = MlflowClient(tracker.uri)
    run = client.search_runs([tracker.experiment_id])[0]
    assert run.data.params["threads.torch_intra_op"] == str(torch.get_num_threads())
    assert run.data.params["threads.OMP_NUM_THREADS"] == "1"
    assert run.data.params["threads.cpu_count"] == str(os.cpu_count())
    assert run.data.tags["version.torch"] == package_versions()["torch"]
    assert {"version.numpy", "version.lightning", "version.mlflow"} <= set(run.data.tags)


# ----------------------------------------------------------------------------- data-dependent: batch vs data
@pytest.fixture(scope="module")
def small_cache(tmp_path_factory) -> Path:
    """A hand-written cache of 3 recordings (2 train subjects), 40 frames each."""
    import numpy as np
    import pandas as pd

    from usssl.data.cache import INDEX_COLUMNS, ShardWriter, write_index

    root = tmp_path_factory.mktemp("faults") / "cache"
    rows = []
    for shard, subject, split in (("s_a", "a", "train"), ("s_b", "b", "train"), ("s_c", "c", "test")):
        writer = ShardWriter(root, shard, capacity=40, size=(16, 16))
        writer.append(np.random.default_rng(0).integers(0, 255, (40, 16, 16), dtype=np.uint8))
        writer.finish(audio=None, labels=np.full(40, -1), gaze=np.full((40, 2), np.nan), flags=np.zeros(40), info={})
        rows.append({"shard": shard, "subject": subject, "split": split, "fps": 10.0, "n_frames": 40, "height": 16,
                     "width": 16, "has_audio": False, "has_speech": False, "n_labelled": 0, "digest": ""})
    (root / "cache.json").write_text(json.dumps({"classes": [], "audio_rate": 16000}))
    (root / "splits.json").write_text(json.dumps({"train": ["a", "b"], "test": ["c"]}))
    write_index(root, pd.DataFrame(rows, columns=INDEX_COLUMNS))
    return root


def _pretrain_yaml(tmp_path: Path, cache: Path, batch: int) -> Path:
    return write(tmp_path, f"output_dir: {tmp_path / 'out'}\ndata: {{cache_dir: {cache}}}\ntracking: {{enabled: false}}\n"
                           f"trainer: {{progress: false}}\nstages:\n  - pretrain: {{method: order_transform, "
                           f"batch_size: {batch}, pairs_per_epoch: 16, encoder: {{width: 4, dim: 8}}}}\n")


def test_a_batch_larger_than_an_epoch_stops_the_pretrain_stage_before_any_output(tmp_path, small_cache):
    from usssl.engine.tracking import Tracker
    from usssl.stages.pretrain import check_batch_fits, run

    cfg = load_config(_pretrain_yaml(tmp_path, small_cache, 1_000))
    with pytest.raises(DataError) as err:
        run(cfg, cfg.stage("pretrain"), Tracker(cfg), resume=False)
    assert str(err.value) == ("pretrain.batch_size: 1000 is larger than the 16 training items of one epoch (from 2 "
                              "training recording(s)), so pretraining would take 0 steps and the 'pretrained' encoder "
                              "would stay random; set batch_size to at most 16, or draw more items per epoch "
                              "(pairs_per_epoch)")
    assert err.value.exit_code == 1 and not (tmp_path / "out").exists()
    assert check_batch_fits(load_config(_pretrain_yaml(tmp_path, small_cache, 8)).stage("pretrain"), 16, 2) == 2


def test_validate_checks_the_batch_against_an_existing_cache(tmp_path, small_cache, capsys):
    assert main(["validate", str(_pretrain_yaml(tmp_path, small_cache, 32))]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'p.yaml'}: stages[0].pretrain.batch_size: 32 is larger than the 16 ")
    assert main(["validate", str(_pretrain_yaml(tmp_path, small_cache, 8))]) == 0
    assert "batch sizes against the cache (2 step(s) per epoch)" in capsys.readouterr().out
    assert main(["validate", str(_pretrain_yaml(tmp_path, small_cache, 8)), "--set", f"data.cache_dir={tmp_path}"]) == 1
    assert "not a usssl cache" in capsys.readouterr().err  # no ingest stage: the cache must be one


# ----------------------------------------------------------------------------- the CLI, end to end
def _run_yaml(tmp_path: Path, extra: str = "") -> Path:
    return write(tmp_path, f"output_dir: {tmp_path / 'out'}\n{extra}trainer: {{progress: false}}\n"
                           "stages: [ingest, pretrain]\n", "run.yaml")


def test_run_refuses_wrong_inputs_outputs_machine_and_tracking_before_writing_anything(tmp_path, capsys, monkeypatch,
                                                                                       gpus):
    monkeypatch.chdir(tmp_path)
    cases = [
        ("data: {sources: [../data/convex]}\n", [], "data.sources[0]: ../data/convex not found (looked for "),
        ("", ["output_dir=/proc/usssl"], "output_dir: /proc/usssl is inside /proc"),
        ("", ["trainer.accelerator=gpu"], "trainer.accelerator: 'gpu', but this machine has no usable CUDA GPU"),
        ("", ["trainer.devices=abc"], "trainer.devices: got 'abc'"),
        ("", ["seed=-1"], "seed: must be 0 … 4294967295 (got -1)"),
        ("", ["pretrain.temperature=.inf"], "must be a finite number"),
        (f"tracking: {{uri: 'http://127.0.0.1:{_free_port()}'}}\n", [], "tracking.uri: the MLflow tracking server"),
    ]
    gpus(0)
    for extra, sets, error in cases:
        path = _run_yaml(tmp_path, extra)
        assert main(["run", str(path), *[f"--set={s}" for s in sets]]) == 2, error
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and error in err, err
        assert not (tmp_path / "out").exists() and not list(tmp_path.rglob("mlflow.db"))


def test_disk_full_or_unwritable_anywhere_in_a_run_is_one_line_that_says_how_to_resume(tmp_path, capsys,
                                                                                       monkeypatch):
    import usssl.pipeline

    path = _run_yaml(tmp_path, "tracking: {enabled: false}\n")
    shard = tmp_path / "out" / "cache" / "shards" / ".tmp-ab" / "frames.npy"

    def full(cfg, resume=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(shard))

    monkeypatch.setattr(usssl.pipeline, "run_pipeline", full)
    assert main(["run", str(path), "--set", "pretrain.max_epochs=2"]) == 1
    assert capsys.readouterr().err == (
        f"error: disk full while writing {shard}; free space on that disk (df -h {shard.parent}) or point output_dir "
        f"(and data.cache_dir) at a disk with room; rerun `usssl run {path} --set=pretrain.max_epochs=2 --resume` to "
        "continue\n")

    def sqlite_full(cfg, resume=False):  # what MLflow's store raises, wrapped
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as exc:
            raise RuntimeError("(sqlite3.OperationalError) database or disk is full") from exc

    monkeypatch.setattr(usssl.pipeline, "run_pipeline", sqlite_full)
    assert main(["run", str(path)]) == 1
    assert capsys.readouterr().err.startswith(f"error: disk full while writing {tmp_path / 'out'}; ")
    assert os_error_message(PermissionError(errno.EACCES, "Permission denied", "/x/y")) == \
        "Permission denied: /x/y; check that you may read and write there, or choose another folder"
    assert os_error_message(ValueError("a bug")) is None  # anything else keeps its traceback


def test_ctrl_c_in_training_says_how_to_resume(tmp_path, capsys, monkeypatch):
    """Lightning turns Ctrl-C inside ``fit`` into ``sys.exit(1)``; the CLI reports it as an interrupt (130)."""
    import lightning as L
    import torch

    import usssl.pipeline

    class CtrlC(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            raise KeyboardInterrupt  # what SIGINT raises in the main thread

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def pretrain_then_ctrl_c(cfg, resume=False):
        trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu", devices=1)
        trainer.fit(CtrlC(), torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=2))

    monkeypatch.setattr(usssl.pipeline, "run_pipeline", pretrain_then_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    try:
        assert main(["run", str(_run_yaml(tmp_path, "tracking: {enabled: false}\n"))]) == 130
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT after an interrupt
    assert capsys.readouterr().err == f"interrupted; rerun `usssl run {tmp_path / 'run.yaml'} --resume` to continue\n"


def test_out_folders_of_ingest_and_predict_are_checked_before_any_work(tmp_path, capsys):
    assert main(["ingest", str(tmp_path), "--out", "/proc/usssl-cache"]) == 2
    assert capsys.readouterr().err.startswith("error: --out: /proc/usssl-cache is inside /proc")
    (tmp_path / "afile").write_text("x")
    assert main(["predict", str(tmp_path / "no-model"), str(tmp_path), "--out", str(tmp_path / "afile")]) == 2
    assert "--out: " in capsys.readouterr().err


def test_binary_yaml_and_alias_bomb_through_the_real_command_print_one_short_line(tmp_path):
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    for path in (write(tmp_path, os.urandom(512) + b"\x00", "b.yaml"), write(tmp_path, "\n".join(bomb) + "\n", "c.yaml")):
        proc = subprocess.run([sys.executable, "-m", "usssl.cli", "validate", str(path)], capture_output=True,
                              text=True, env=ENV, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1 and len(proc.stderr) < 300, proc.stderr


def test_parse_yaml_accepts_ordinary_documents():
    assert parse_yaml("a: 1\nb: [2, 3]\n", "x") == {"a": 1, "b": [2, 3]}
    assert parse_yaml("", "x") is None
