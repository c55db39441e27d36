"""Screenshots of a run in MLflow's UI for docs/mlflow.md, taken with Debian's Chromium in headless mode.

    python tools/mlflow_screenshots.py runs/demo [--out docs/images] [--port 5055]

Starts ``mlflow ui --workers 1`` on ``RUN_DIR/mlflow.db`` (in its own process group, stopped after), then
``chromium --headless --screenshot`` on: the experiment's runs table (expanded), the pipeline run's
overview (its description: headline + report) and the first configuration run's metrics. Nothing is
downloaded: without ``/usr/bin/chromium`` (Debian: ``apt install chromium``) the script prints why and
exits 0. The UI is a single-page app: ``--virtual-time-budget`` gives its scripts time to render.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def wait_for(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow ui did not answer at {url} within {timeout_s:.0f} s")


def shoot(url: str, path: Path, size: str = "1600,1000") -> None:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={size}", "--virtual-time-budget=15000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=120)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="output_dir of a finished usssl run (holds mlflow.db)")
    parser.add_argument("--out", default="docs/images", help="folder for the PNGs (default: docs/images)")
    parser.add_argument("--port", type=int, default=5055, help="port for the temporary mlflow ui (default: 5055)")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        print(f"skipped: {CHROMIUM} not found (Debian: apt install chromium); no screenshots taken")
        return 0
    db = Path(args.run_dir).resolve() / "mlflow.db"
    if not db.is_file():
        print(f"error: {db} not found: give the output_dir of a finished usssl run", file=sys.stderr)
        return 2
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    experiment = next(e for e in client.search_experiments() if e.name != "Default")
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    config = next((r for r in runs if r.data.tags.get("usssl.kind") == "configuration"), None)
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    server = subprocess.Popen([mlflow_bin, "ui", "--backend-store-uri", uri, "--workers", "1", "--host", "127.0.0.1",
                               "--port", str(args.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{args.port}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        wait_for(base, server)
        exp = f"{base}/#/experiments/{experiment.experiment_id}"
        shoot(f"{exp}/runs?workflowType=machine_learning", out / "mlflow-runs.png")
        shoot(f"{exp}/runs/{parent.info.run_id}?workflowType=machine_learning", out / "mlflow-pipeline-run.png")
        if config is not None:
            shoot(f"{exp}/runs/{config.info.run_id}/model-metrics?workflowType=machine_learning",
                  out / "mlflow-configuration-run.png")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
