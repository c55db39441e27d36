"""MLflow tracking from rank 0: one parent run per pipeline, one nested run per stage.

Lightning's ``MLFlowLogger`` defaults to MLflow's file store, which MLflow ≥ 3.13 refuses, and it
logs from every rank unless told otherwise; usssl uses this small tracker instead. The default
store is ``sqlite:///<output_dir>/mlflow.db`` with artifacts in ``<output_dir>/mlartifacts``;
``MLFLOW_TRACKING_URI`` overrides it. On ranks other than 0, and when tracking is disabled, every
method is a no-op.

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
the tracking URI), because folder names in hospitals often carry patient names; nothing else the
tracker logs comes from the raw data.

    >>> tracker = Tracker(cfg)
    >>> with tracker.pipeline_run(), tracker.stage("pretrain"):
    ...     tracker.log_metrics({"train/loss": 0.3}, step=10)
"""

from __future__ import annotations

import base64
import contextlib
import importlib.metadata
import json
import logging
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

from usssl.config import PipelineConfig, flatten, to_yaml
from usssl.engine.distributed import launcher_rank
from usssl.errors import ConfigError

log = logging.getLogger(__name__)

PACKAGES = ("usssl", "torch", "torchvision", "torchaudio", "lightning", "mlflow", "numpy", "pandas", "av", "pydicom",
            "opencv-python-headless", "pydantic")
SERVER_TIMEOUT_S = 3.0
"""How long a remote tracking server may take to answer before a run is refused."""
DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


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


def shown_uri(uri: str) -> str:
    """``uri`` without a user name or password, for messages."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        return parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")).geturl()
    return uri


def tracking_problem(uri: str, timeout_s: float = SERVER_TIMEOUT_S) -> str | None:
    """Why the remote tracking store at ``uri`` cannot be used, found within ``timeout_s`` seconds, or None
    (it answered, or it is local: sqlite, file). http(s): ``GET <uri>/health`` (proxy settings are
    honoured, as MLflow does), which an MLflow server answers with 200, or 401/403 behind a login; a
    database URI: a TCP connection."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    try:
        if scheme in ("http", "https"):
            status = _health_status(uri, timeout_s)
            if status == 404:
                return "it answered HTTP 404 for /health: not an MLflow server? check the host, port and path"
            if status >= 400 and status not in (401, 403):
                return f"it answered HTTP {status}: the server, or a proxy on the way, reports an error"
        elif scheme in DB_PORTS and parts.hostname:
            socket.create_connection((parts.hostname, parts.port or DB_PORTS[scheme]), timeout=timeout_s).close()
    except (TimeoutError, socket.timeout):
        return f"no answer within {timeout_s:g} s"
    except ConnectionRefusedError:
        return "connection refused: nothing listens there"
    except socket.gaierror:
        return f"unknown host {parts.hostname!r}"
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def _health_status(uri: str, timeout_s: float) -> int:
    """The HTTP status of ``GET <uri>/health`` (200 for a TLS error: MLflow reports those itself)."""
    parts = urlsplit(uri)
    request = urllib.request.Request(shown_uri(uri).rstrip("/") + "/health")
    if parts.username:
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError as exc:
        reason = exc.reason
        if "ssl" in type(reason).__module__ or "CERTIFICATE" in str(reason).upper():
            return 200
        raise reason if isinstance(reason, OSError) else OSError(str(reason)) from None


def check_tracking_server(uri: str, timeout_s: float = SERVER_TIMEOUT_S, source: str | None = None) -> None:
    """Raise at once when the remote tracking store does not answer (:func:`tracking_problem`).

    Raises:
        ConfigError: names the URI (without credentials), where it came from (``MLFLOW_TRACKING_URI``, or
            ``tracking.uri`` of the YAML ``source``) and what to do.
    """
    problem = tracking_problem(uri, timeout_s)
    if problem:
        env = os.environ.get("MLFLOW_TRACKING_URI") == uri
        origin = "MLFLOW_TRACKING_URI" if env else "tracking.uri"
        where = f"{source}: " if source and not env else ""
        raise ConfigError(f"{where}{origin}: the MLflow tracking server {shown_uri(uri)} cannot be used ({problem}); "
                          f"start it (mlflow server --host HOST --port PORT), correct {origin}, or set "
                          "tracking.enabled: false to run without tracking")


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


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a Linux process, or None when unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state is field 3, starttime 22
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_tags() -> dict[str, str]:
    """Tags naming this process, so that a later start can tell whether it still runs."""
    stat = _proc_stat(os.getpid())
    return {"usssl.host": socket.gethostname(), "usssl.pid": str(os.getpid()),
            "usssl.process_start": f"{_boot_id()}/{stat[1]}" if stat else ""}


def process_gone(tags: dict[str, str]) -> bool:
    """True when ``tags`` (:func:`process_tags` of a run) name a process of this host that has ended.

    A process counts as running while its pid exists with the recorded start time (boot id and
    start tick, so a reused pid or a reboot is seen as gone) and is not a zombie. Runs of another
    host, or without the tags (older usssl), are never called gone.
    """
    if tags.get("usssl.host") != socket.gethostname() or not tags.get("usssl.pid", "").isdigit():
        return False
    pid = int(tags["usssl.pid"])
    recorded = tags.get("usssl.process_start", "")
    stat = _proc_stat(pid)
    if stat is not None:
        if stat[0] in ("Z", "X"):  # killed but not yet reaped by its parent
            return True
        return bool(recorded) and recorded != f"{_boot_id()}/{stat[1]}"
    if recorded.split("/")[0] not in ("", _boot_id()):  # the machine rebooted since
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process (or /proc hidden): it exists
        return False
    return False


def _default_artifact_root(cfg: PipelineConfig) -> str:
    return (Path(cfg.output_dir).resolve() / "mlartifacts").as_uri()


class Tracker:
    """Rank-0 MLflow logging with explicit run ids (safe to call from callbacks)."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.enabled = cfg.tracking.enabled and launcher_rank() == 0
        self.uri = cfg.tracking_uri
        self.client = None
        self.parent_id: str | None = None
        self.run_id: str | None = None  # the active stage run (or the parent outside stages)
        if self.enabled:
            check_tracking_server(self.uri)  # seconds, not minutes of MLflow's retries
            os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no schema-migration chatter
            from mlflow.tracking import MlflowClient

            logging.getLogger("alembic").setLevel(logging.WARNING)
            # No mlflow.set_tracking_uri: in MLflow 3 it also sets MLFLOW_TRACKING_URI, which would send
            # every later pipeline of this process (notebooks, tests) to this run's store.
            self.client = MlflowClient(self.uri)
            exp = self.client.get_experiment_by_name(cfg.tracking.experiment)
            if exp is None:
                location = _default_artifact_root(cfg) if self.uri.startswith("sqlite:") else None
                self.experiment_id = self.client.create_experiment(cfg.tracking.experiment, location)
            else:
                self.experiment_id = exp.experiment_id
            self.end_orphaned_runs()

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

    @contextlib.contextmanager
    def pipeline_run(self, run_name: str | None = None) -> Iterator["Tracker"]:
        """The parent run: config, versions, thread counts, git commit."""
        threads = thread_settings()
        log.info("threads: %s (results can differ with the thread count)", describe_threads(threads))
        if not self.enabled:
            yield self
            return
        run = self.client.create_run(self.experiment_id, run_name=run_name or self.cfg.name,
                                     tags={"usssl.pipeline": self.cfg.name, **process_tags()})
        self.parent_id = self.run_id = run.info.run_id
        status = "FAILED"
        try:
            self.log_params({**redacted_params(self.cfg), **threads})
            self.log_text(to_yaml(self.cfg, redact=True), "config.yaml")
            versions = package_versions()
            self.log_dict(versions, "versions.json")
            tags = {f"version.{k}": v for k, v in versions.items()}
            commit = git_commit()
            if commit:
                tags["git_commit"] = commit
            self.set_tags(tags)
            yield self
            status = "FINISHED"
        finally:
            self.client.set_terminated(run.info.run_id, status=status)
            self.run_id = self.parent_id = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator["Tracker"]:
        """A nested run for one stage, under the pipeline run."""
        if not self.enabled:
            yield self
            return
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={"mlflow.parentRunId": self.parent_id or "", "usssl.stage": name, **process_tags()},
        )
        outer, self.run_id = self.run_id, run.info.run_id
        status = "FAILED"
        try:
            yield self
            status = "FINISHED"
        finally:
            self.client.set_terminated(run.info.run_id, status=status)
            self.run_id = outer

    # -- logging -------------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.enabled or not metrics:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k.replace("@", "_"), float(v), now, step or 0) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: dict[str, str]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        if self.enabled:
            self.client.log_text(self.run_id, text, name)

    def log_dict(self, data: dict, name: str) -> None:
        if self.enabled:
            self.client.log_text(self.run_id, json.dumps(data, indent=2, default=str), name)
