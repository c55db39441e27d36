"""An export folder as a MONAI bundle, for MONAI's bundle tooling (``monai.bundle``) and model zoos.

The bundle (MONAI's layout, https://docs.monai.io/en/stable/mb_specification.html)::

    configs/metadata.json    version, task, class names, the network's input (1 channel, T×H×W in
                             [0, 1], float32) and output (n_classes logits), the research-use disclaimer
    configs/inference.json   ``network_def``: the wrapper below around models/model.pt2
    models/model.pt2         the plane classifier's ``torch.export`` program (copied from the export)
    models/preprocessing.json  how a recording becomes the input (the export's, unchanged)
    scripts/network.py       ``ExportedNetwork``: an ``nn.Module`` that runs the program (needs only torch)
    docs/README.md           what the bundle is and how to check it

The wrapper exists because an exported program refuses ``.eval()`` / ``.train()`` (it always runs as it
was exported: in eval mode), which MONAI's tooling calls; the wrapper keeps the program out of its
children so those calls succeed. ``bundle_root`` is ``"."`` (MONAI's convention): run the tooling from
the bundle folder or pass ``--bundle_root DIR``.

    >>> write_bundle("runs/demo/export", "runs/demo/monai_bundle")
    >>> # from the bundle folder (``python -m monai.bundle verify_net_in_out …`` does the same, with ``fire``):
    >>> from monai.bundle import verify_net_in_out
    >>> verify_net_in_out("network_def", meta_file="configs/metadata.json", config_file="configs/inference.json")
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from usssl.downstream.export import DISCLAIMER, MODEL_FILE, SPEC_FILE
from usssl.errors import DataError

CHECK = ("python -c \"from monai.bundle import verify_net_in_out; verify_net_in_out('network_def', "
         "meta_file='configs/metadata.json', config_file='configs/inference.json')\"")
"""The bundle check, run from the bundle folder (``python -m monai.bundle`` needs the ``fire`` package)."""

NETWORK_PY = '''"""The usssl plane classifier of this bundle as an nn.Module (needs only torch)."""

import torch


class ExportedNetwork(torch.nn.Module):
    """Runs the ``torch.export`` program at ``path``: video (B, 1, T, H, W) in [0, 1] -> logits (B, C).

    The program is kept out of the module's children: exported programs refuse .eval() and .train()
    (they always run as exported, in eval mode), which MONAI's tooling calls.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.__dict__["program"] = torch.export.load(path).module()

    def to(self, *args, **kwargs):
        self.__dict__["program"] = self.program.to(*args, **kwargs)
        return super().to(*args, **kwargs)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.program(video)
'''

INFERENCE = {
    # (no expression with an @reference may contain the word "import": MONAI parses those as statements)
    "imports": ["$import os", "$import torch", "$from importlib import util as module_util"],
    "bundle_root": ".",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_file": "$os.path.join(@bundle_root, 'scripts', 'network.py')",
    "network_spec": "$module_util.spec_from_file_location('usssl_bundle_network', @network_file)",
    "network_module": "$module_util.module_from_spec(@network_spec)",
    "network_loaded": "$@network_spec.loader.exec_module(@network_module) or @network_module",
    "network_def": "$@network_loaded.ExportedNetwork(os.path.join(@bundle_root, 'models', 'model.pt2'))",
    "network": "$@network_def.to(@device)",
}


def bundle_metadata(spec: dict) -> dict:
    """``configs/metadata.json`` for the export whose ``preprocessing.json`` is ``spec``."""
    h, w = spec["input"]["size"]
    t = spec["models"]["planes"]["clip_frames"]
    classes = list(spec["class_names"])
    return {
        "version": "0.1.0",
        "changelog": {"0.1.0": "exported by usssl"},
        "monai_version": _version("monai"),
        "pytorch_version": spec.get("torch_version"),
        "numpy_version": _version("numpy"),
        "required_packages_version": {},
        "task": "standard-plane detection in ultrasound video (frame or clip classification)",
        "description": f"usssl plane classifier ({spec.get('provenance', {}).get('init')} init, "
                       f"{spec.get('provenance', {}).get('protocol')} protocol). {DISCLAIMER}",
        "authors": "usssl", "copyright": "see the training data's licence",
        "intended_use": DISCLAIMER,
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "US", "num_channels": 1,
                                 "spatial_shape": [t, h, w], "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": False, "channel_def": {"0": "grey level / 255"}}},
            "outputs": {"pred": {"type": "probabilities", "format": "logits", "num_channels": len(classes),
                                 "spatial_shape": [1], "dtype": "float32", "value_range": [],
                                 "is_patch_data": False,
                                 "channel_def": {str(i): name for i, name in enumerate(classes)}}},
        },
        "usssl_preprocessing": "models/preprocessing.json",
    }


def write_bundle(export_dir: str | Path, bundle_dir: str | Path) -> Path:
    """Write the MONAI bundle of the export folder ``export_dir`` (its plane classifier) to ``bundle_dir``.

    Raises:
        DataError: ``export_dir`` has no model.pt2 or preprocessing.json.
    """
    src, out = Path(export_dir), Path(bundle_dir)
    if not (src / MODEL_FILE).is_file() or not (src / SPEC_FILE).is_file():
        raise DataError(f"{src}: no {MODEL_FILE} and {SPEC_FILE}; give an export folder (usssl export RUN_DIR)")
    spec = json.loads((src / SPEC_FILE).read_text())
    for sub in ("configs", "models", "scripts", "docs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / MODEL_FILE, out / "models" / MODEL_FILE)
    shutil.copyfile(src / SPEC_FILE, out / "models" / SPEC_FILE)
    (out / "scripts" / "network.py").write_text(NETWORK_PY)
    (out / "configs" / "inference.json").write_text(json.dumps(INFERENCE, indent=2))
    (out / "configs" / "metadata.json").write_text(json.dumps(bundle_metadata(spec), indent=2))
    (out / "docs" / "README.md").write_text(
        "# usssl plane classifier (MONAI bundle)\n\n" + DISCLAIMER + "\n\n"
        "Input: video clips (B, 1, T, H, W), grey levels / 255; preprocessing (crop, frame rate, size) as in "
        "models/preprocessing.json. Output: logits over the classes in configs/metadata.json.\n\n"
        "Check it from this folder:\n\n    " + CHECK + "\n")
    return out


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
