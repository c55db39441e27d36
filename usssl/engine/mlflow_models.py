"""Exported networks as MLflow models: what the export stage logs so that its classifier (and saliency
model) appear on MLflow's Models page, can be registered, and load with ``mlflow.pytorch.load_model``.

Each is a ``torch.export`` program (``serialization_format="pt2"``: no pickled Python classes, no usssl
needed to load it) with a tensor signature whose batch dimension is free, an input example, pinned
requirements (no pip inference, which would import the model in a subprocess) and ``preprocessing.json``
attached (how a recording becomes the input). MLflow's ``log_model`` reads its store from the global
tracking URI; :func:`tracking_uri` sets it for the call only and puts the environment back.

    >>> model_id = log_torch_model(tracker, classifier, "plane_classifier", example, [spec_path])
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def tracking_uri(uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """MLflow's global tracking URI set to ``uri`` (and ``MLFLOW_EXPERIMENT_ID`` to ``experiment_id``)
    inside; the previous URI and both environment variables restored after."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")
    saved = {name: os.environ.get(name) for name in names}
    before = getattr(utils, "_tracking_uri", None)
    mlflow.set_tracking_uri(uri)
    if experiment_id is not None:  # where log_model creates the model (else MLflow's default experiment)
        os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def log_torch_model(tracker, module, name: str, example, extra_files: list[Path], params: dict | None = None,
                    run_id: str | None = None) -> str | None:  # fmt: skip
    """Log ``module`` (eval mode; ``example`` a (B > 1, …) float tensor) as the MLflow model ``name`` of
    the tracker's active run (or ``run_id``); returns its model id (None without tracking)."""
    if not tracker.enabled:
        return None
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            output = module(example)
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]), "video")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *output.shape[1:]))]))
        with tracking_uri(tracker.uri, tracker.experiment_id):
            info = mlflow.pytorch.log_model(
                module, name=name, serialization_format="pt2", input_example=example.numpy(), signature=signature,
                extra_files=[str(p) for p in extra_files], pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                params={k: str(v) for k, v in (params or {}).items()} or None, run_id=run_id or tracker.run_id,
                validate_serving_input=False)  # it would run the model again in a new environment
    finally:
        module.train(was_training)
    log.info("logged the MLflow model %s (%s)", name, info.model_uri)
    return info.model_id
