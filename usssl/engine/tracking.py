"""MLflow tracking from rank 0, laid out as MLflow's own UI expects.

Lightning's ``MLFlowLogger`` defaults to MLflow's file store, which MLflow ≥ 3.13 refuses, and it
logs from every rank unless told otherwise; usssl uses this small tracker instead. The default
store is ``sqlite:///<output_dir>/mlflow.db`` with artifacts in ``<output_dir>/mlartifacts``;
``MLFLOW_TRACKING_URI`` overrides it. On ranks other than 0, and when tracking is disabled, every
method is a no-op.

Layout (docs/mlflow.md): the experiment is named by ``MLFLOW_EXPERIMENT_NAME``, else
``tracking.experiment`` when the YAML sets it, else the pipeline's ``name`` (:func:`experiment_name`),
and carries the tag ``mlflow.experimentKind = custom_model_development`` so that MLflow 3's UI opens
it on the runs table (not the GenAI traces view). One parent run per pipeline (config, versions,
MLflow's standard source / commit / user tags, the dataset as a run input, the headline metrics and
the report as its description), one nested run per stage, and below a stage any further nested runs
it opens with :meth:`Tracker.child` (the evaluate stage: one per configuration, one per fitted
model below it; the pretrain stage: one per pretraining when it has several folds or seeds).

Runs left RUNNING by a process that was killed (SIGKILL, power loss, an OOM kill: no ``finally``
ran) are ended on the next start: every run carries tags naming its process (``usssl.host``,
``usssl.pid``, ``usssl.process_start``), and a new ``Tracker`` sets each RUNNING run of its
experiment whose process on this host is gone to KILLED, with the tag ``usssl.ended`` saying why.
Runs of other hosts are left alone (their processes cannot be checked from here).

Every pipeline run logs, besides the config, what can change its numbers without changing the
config: library versions (tags ``version.*``, ``versions.json``) and the thread counts (params
``threads.*``: torch's intra-/inter-op threads, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, CPU count;
also written to the log, tracking on or off). A remote tracking server that does not answer within
``SERVER_TIMEOUT_S`` is an error at once, not minutes of MLflow's retries.

Privacy: the config (params and ``config.yaml``) is logged with every path redacted (the fields
marked ``PATH`` in ``usssl.config``: sources, side tables, cache and output folders, model folders,
the tracking URI), because folder names in hospitals often carry patient names; the dataset input
names no path either (its source is the pipeline's name). Nothing else the tracker logs comes from
the raw data.

    >>> tracker = Tracker(cfg)
    >>> with tracker.pipeline_run(), tracker.stage("evaluate"):
    ...     with tracker.child("random-linear-1", params={"init": "random"}):
    ...         tracker.log_metrics({"macro_f1": 63.4})
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.metadata
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

from usssl.config import PipelineConfig, flatten, to_yaml
from usssl.engine.distributed import launcher_rank
from usssl.engine.tracking_checks import (SERVER_TIMEOUT_S, check_tracking_server, process_gone,  # noqa: F401
                                         process_tags, shown_uri, tracking_problem)

log = logging.getLogger(__name__)

PACKAGES = ("usssl", "torch", "torchvision", "torchaudio", "lightning", "mlflow", "monai", "numpy", "pandas", "av",
            "pydicom", "opencv-python-headless", "pydantic")
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""MLflow 3's experiment kind for model training: its UI then opens the runs table, not GenAI traces."""
NOTE_TAG = "mlflow.note.content"  # a run's description (Markdown) in MLflow's UI
MAX_TAG_CHARS = 8000  # MLflow truncates longer tag values
UI_ADDRESS = "http://127.0.0.1:5000"


def experiment_name(cfg: PipelineConfig) -> str:
    """``MLFLOW_EXPERIMENT_NAME`` when set, else ``tracking.experiment`` when the YAML sets it, else the
    pipeline's ``name``."""
    env = os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip()
    if env:
        return env
    if "experiment" in cfg.tracking.model_fields_set:
        return cfg.tracking.experiment
    return cfg.name


def runs_url(experiment_id: str, address: str = UI_ADDRESS) -> str:
    """The address of the experiment's runs table in ``mlflow ui`` (the machine-learning view)."""
    return f"{address.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def ui_command(uri: str) -> str:
    """The command that opens a local store in MLflow's UI with one worker process (the default 4 take
    ~3 GiB on a laptop)."""
    return f"mlflow ui --backend-store-uri {uri} --workers 1"


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a result."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def thread_settings() -> dict[str, str]:
    """The thread counts that can change a result (float sums are ordered by thread): torch's intra-
    and inter-op threads, ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` ("unset": the libraries' default,
    usually one per core) and the CPU count, as ``threads.*`` params."""
    import torch

    return {"threads.torch_intra_op": str(torch.get_num_threads()),
            "threads.torch_inter_op": str(torch.get_num_interop_threads()),
            "threads.OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
            "threads.MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "unset"),
            "threads.cpu_count": str(os.cpu_count())}


def describe_threads(threads: dict[str, str] | None = None) -> str:
    """``torch intra-op 2, inter-op 2; OMP_NUM_THREADS=1, MKL_NUM_THREADS=unset; 2 CPU(s)``."""
    t = threads or thread_settings()
    return (f"torch intra-op {t['threads.torch_intra_op']}, inter-op {t['threads.torch_inter_op']}; "
            f"OMP_NUM_THREADS={t['threads.OMP_NUM_THREADS']}, MKL_NUM_THREADS={t['threads.MKL_NUM_THREADS']}; "
            f"{t['threads.cpu_count']} CPU(s)")


def git_commit(path: Path | None = None) -> str | None:
    """The current git commit of the working tree that holds ``path``, or None."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path or Path.cwd(), capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def redacted_params(cfg: PipelineConfig) -> dict[str, str]:
    """Flattened config with every path replaced by a count (folder names may name patients)."""
    return flatten(cfg, redact=True)


def standard_tags(cfg: PipelineConfig) -> dict[str, str]:
    """MLflow's own source, commit and user tags (its UI's Source and User columns): the source is
    ``usssl run <pipeline name>`` (never a file path), the commit that of the working directory's git
    tree, else of usssl's own."""
    tags = {"mlflow.source.name": f"usssl run {cfg.name}", "mlflow.source.type": "LOCAL"}
    commit = git_commit() or git_commit(Path(__file__).resolve().parent)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        pass
    return tags


def _default_artifact_root(cfg: PipelineConfig) -> str:
    return (Path(cfg.output_dir).resolve() / "mlartifacts").as_uri()


class Tracker:
    """Rank-0 MLflow logging with explicit run ids (safe to call from callbacks).

    ``run_id`` is the active run: the pipeline run, a stage run inside :meth:`stage`, a nested run
    inside :meth:`child`; every ``log_*`` method writes there unless given a ``run_id``.
    """

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.enabled = cfg.tracking.enabled and launcher_rank() == 0
        self.uri = cfg.tracking_uri
        self.experiment = experiment_name(cfg)
        self.client = None
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self.run_id: str | None = None  # the active run (the parent outside stages)
        self._tags: dict[str, str] = {}
        if self.enabled:
            check_tracking_server(self.uri)  # seconds, not minutes of MLflow's retries
            os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no schema-migration chatter
            from mlflow.tracking import MlflowClient

            logging.getLogger("alembic").setLevel(logging.WARNING)
            # No mlflow.set_tracking_uri: in MLflow 3 it also sets MLFLOW_TRACKING_URI, which would send
            # every later pipeline of this process (notebooks, tests) to this run's store.
            self.client = MlflowClient(self.uri)
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                location = _default_artifact_root(cfg) if self.uri.startswith("sqlite:") else None
                self.experiment_id = self.client.create_experiment(self.experiment, location,
                                                                   tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            else:
                self.experiment_id = exp.experiment_id
                if EXPERIMENT_KIND_TAG not in exp.tags:  # an experiment made elsewhere: keep a kind it has
                    self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            self._tags = standard_tags(cfg)
            self.end_orphaned_runs()

    @property
    def runs_url(self) -> str | None:
        """The experiment's runs table in a local ``mlflow ui`` (None without tracking)."""
        return runs_url(self.experiment_id) if self.experiment_id is not None else None

    def end_orphaned_runs(self) -> list[str]:
        """Set every RUNNING run of the experiment whose process is gone (``process_gone``) to
        KILLED, with the tag ``usssl.ended``; returns their ids."""
        if not self.enabled:
            return []
        ended, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'",
                                           max_results=1000, page_token=token)
            for run in page:
                tags = run.data.tags
                if not process_gone(tags):
                    continue
                note = (f"KILLED: process {tags['usssl.pid']} on {tags['usssl.host']} had ended without closing "
                        f"this run; found by the next start at {time.strftime('%Y-%m-%d %H:%M:%S %z')}")
                self.client.set_tag(run.info.run_id, "usssl.ended", note)
                self.client.set_terminated(run.info.run_id, status="KILLED")
                ended.append(run.info.run_id)
            token = page.token
            if not token:
                break
        if ended:
            log.warning("%d MLflow run(s) left RUNNING by a process that is gone set to KILLED", len(ended))
        return ended

    def _create_run(self, name: str, parent: str | None, tags: dict[str, str] | None = None) -> str:
        tags = {**self._tags, "usssl.pipeline": self.cfg.name, **process_tags(), **(tags or {})}
        if parent:
            tags["mlflow.parentRunId"] = parent
        return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    @contextlib.contextmanager
    def _active(self, run_id: str) -> Iterator[str]:
        """``run_id`` is the active run inside; FINISHED after, FAILED on an exception."""
        outer, self.run_id = self.run_id, run_id
        status = "FAILED"
        try:
            yield run_id
            status = "FINISHED"
        finally:
            self.client.set_terminated(run_id, status=status)
            self.run_id = outer

    @contextlib.contextmanager
    def pipeline_run(self, run_name: str | None = None) -> Iterator["Tracker"]:
        """The parent run: config, versions, thread counts, source tags."""
        threads = thread_settings()
        log.info("threads: %s (results can differ with the thread count)", describe_threads(threads))
        if not self.enabled:
            yield self
            return
        self.parent_id = self._create_run(run_name or self.cfg.name, None)
        try:
            with self._active(self.parent_id):
                self.log_params({**redacted_params(self.cfg), **threads})
                self.log_text(to_yaml(self.cfg, redact=True), "config.yaml")
                versions = package_versions()
                self.log_dict(versions, "versions.json")
                self.set_tags({f"version.{k}": v for k, v in versions.items()})
                yield self
        finally:
            self.parent_id = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator["Tracker"]:
        """A nested run for one stage, under the pipeline run."""
        if not self.enabled:
            yield self
            return
        with self._active(self._create_run(name, self.parent_id, {"usssl.stage": name})):
            yield self

    @contextlib.contextmanager
    def child(self, name: str, params: dict[str, Any] | None = None,
              tags: dict[str, str] | None = None) -> Iterator[str | None]:  # fmt: skip
        """A run nested under the active one (a configuration under evaluate, a fitted model under that),
        active inside; yields its id (None without tracking)."""
        if not self.enabled:
            yield None
            return
        with self._active(self._create_run(name, self.run_id, tags)) as run_id:
            if params:
                self.log_params(params)
            yield run_id

    def run_exists(self, run_id: str | None) -> bool:
        """Whether ``run_id`` is a run of this store and experiment."""
        if not self.enabled or not run_id:
            return False
        try:
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except Exception:  # noqa: BLE001 (MlflowException: not found; another store's id)
            return False

    def adopt(self, run_id: str) -> None:
        """Move the run ``run_id`` (and its children) under the active run."""
        if self.enabled:
            self.client.set_tag(run_id, "mlflow.parentRunId", self.run_id)

    # -- logging -------------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any], run_id: str | None = None) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id or self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, run_id: str | None = None) -> None:
        if not self.enabled or not metrics:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k.replace("@", "_"), float(v), now, step or 0) for k, v in metrics.items()]
        self.client.log_batch(run_id or self.run_id, metrics=items)

    def log_history(self, history: dict[str, list[tuple[int, float]]], run_id: str | None = None) -> None:
        """Whole curves at once: metric name -> [(step, value), ...]."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(s)) for k, points in history.items() for s, v in points]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id or self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: dict[str, str], run_id: str | None = None) -> None:
        if not self.enabled:
            return
        from mlflow.entities import RunTag

        self.client.log_batch(run_id or self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def set_description(self, text: str, run_id: str | None = None) -> None:
        """The run's description in MLflow's UI (Markdown; cut at MLflow's 8000 characters)."""
        if len(text) > MAX_TAG_CHARS:
            more = "\n\n… (cut: the full report is the artifact report/report.md of the evaluate run)"
            text = text[: MAX_TAG_CHARS - len(more)] + more
        self.set_tags({NOTE_TAG: text}, run_id)

    def log_dataset(self, name: str, digest: str, profile: dict[str, Any], card: str | None = None,
                    context: str = "training", run_id: str | None = None) -> None:  # fmt: skip
        """The cache as a run input (MLflow's Dataset column): ``name``, the first 12 hex digits of its
        ``digest`` (the full one in the profile), counts in ``profile``; the data card as the artifact
        ``dataset/data_card.md``. Its source names the pipeline, never a path."""
        if not self.enabled:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag

        source = json.dumps({"tags": {"usssl.pipeline": self.cfg.name}})
        dataset = Dataset(name=name, digest=digest[:12], source_type="code", source=source,
                          profile=json.dumps({"digest": digest, **profile}, default=str))
        self.client.log_inputs(run_id or self.run_id,
                               [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])
        if card:
            self.client.log_text(run_id or self.run_id, card, "dataset/data_card.md")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None, run_id: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifact(run_id or self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        if self.enabled:
            self.client.log_text(self.run_id, text, name)

    def log_dict(self, data: dict, name: str) -> None:
        if self.enabled:
            self.client.log_text(self.run_id, json.dumps(data, indent=2, default=str), name)
