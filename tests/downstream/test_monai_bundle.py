"""The MONAI bundle target: MONAI's own `verify_net_in_out` loads and runs the wrapped network, whose
logits equal the export's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from usssl.downstream.export import PreprocessingSpec, export_model, load_exported
from usssl.downstream.monai_bundle import write_bundle

sys.path.insert(0, os.path.dirname(__file__))
from test_export import CLASSES, SIZE, tiny_classifier  # noqa: E402


def _bundle(tmp_path):
    spec = PreprocessingSpec(class_names=CLASSES, size=SIZE, fps=10.0, init="random", protocol="linear")
    export_model(tiny_classifier(), tmp_path / "export", spec)
    return write_bundle(tmp_path / "export", tmp_path / "bundle")


def test_bundle_layout_and_metadata(tmp_path):
    bundle = _bundle(tmp_path)
    files = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    assert files == ["configs/inference.json", "configs/metadata.json", "docs/README.md", "models/model.pt2",
                     "models/preprocessing.json", "scripts/network.py"]
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [1, 32, 32] and image["dtype"] == "float32"
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == 3 and pred["channel_def"] == {"0": "background", "1": "4ch", "2": "abdomen"}
    assert "Research use only" in meta["intended_use"]


def test_monai_verify_net_in_out_passes_and_the_network_matches_the_export(tmp_path):
    from monai.bundle import ConfigParser, verify_net_in_out

    bundle = _bundle(tmp_path)
    verify_net_in_out("network_def", meta_file=str(bundle / "configs" / "metadata.json"),
                      config_file=str(bundle / "configs" / "inference.json"), device="cpu",
                      bundle_root=str(bundle))  # raises when shapes or dtypes differ from metadata.json
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def").eval()
    video = torch.rand(4, 1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = torch.log_softmax(torch.log(load_exported(tmp_path / "export").planes(video)), dim=1)
    assert torch.allclose(torch.log_softmax(net(video), dim=1), expected, atol=1e-5)


def test_the_check_runs_from_the_bundle_folder_with_its_default_bundle_root(tmp_path):
    bundle = _bundle(tmp_path)  # `python -m monai.bundle` needs the `fire` package, which usssl does not install
    code = ("from monai.bundle import verify_net_in_out; verify_net_in_out('network_def', "
            "meta_file='configs/metadata.json', config_file='configs/inference.json', device='cpu'); print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=bundle, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
