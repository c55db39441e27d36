"""The tiny pipeline with 2 CPU processes (Lightning DDP, gloo): one pipeline, one set of outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from conftest import tiny_raw


def test_two_process_ddp_pipeline(tmp_path, tiny_run):
    cfg0, _ = tiny_run
    raw = tiny_raw(tmp_path / "run", tracking={"enabled": False})
    raw["data"]["sources"] = [str(Path(cfg0.output_dir) / "synth")]
    raw["trainer"].update({"devices": 2, "strategy": "ddp", "accelerator": "cpu"})
    raw["stages"][2]["finetune"]["protocols"] = ["finetune"]
    raw["stages"][2]["finetune"]["label_fractions"] = [1.0]
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "USSSL_SUBJECT_KEY": "usssl-test-key", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "usssl.cli", "run", str(path)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    summary = json.loads((out / "stages" / "1-pretrain.done.json").read_text())
    # 48 pairs per epoch, batch 16 per process, 2 processes: 48 / (16 · 2) = 1 full step per epoch
    assert summary["epochs"] == 2
    ckpt = __import__("torch").load(out / "checkpoints" / "pretrain" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 * (48 // 2 // 16)
    results = pd.read_csv(out / "evaluate" / "results.csv")
    assert len(results) == 2 and set(results["init"]) == {"random", "video_speech"}
    assert len(list((out / "stages").glob("*.done.json"))) == len(raw["stages"])  # once, by the main process
