"""Screenshots of a run in MLflow's UI for docs/mlflow.md, taken with Debian's Chromium (headless).

    python tools/mlflow_screenshots.py RUN_DIR [--out docs/img/mlflow] [--port 5055]

Starts ``mlflow ui --workers 1`` on ``RUN_DIR/mlflow.db`` (in its own process group, stopped after) and
drives ``chromium --headless`` through Debian's ``chromedriver`` (package ``chromium-driver``), spoken
to with the W3C WebDriver protocol over plain HTTP from the standard library (no selenium, nothing
downloaded). Before the shots it sets the UI's own browser-side settings (``localStorage``): the
assistant side panel closed, the pipeline, pretrain and evaluate runs expanded, a few columns shown.
It writes, under ``--out``:

- ``runs.png``: the experiment's runs table (machine-learning view), the run tree expanded;
- ``configurations.png``: the evaluate stage's configuration runs (filter ``usssl.kind``), their
  estimate and interval in %;
- ``configurations-chart.png``: the same runs in the chart view (one bar per configuration);
- ``pretrainings-chart.png``: the pretrain stage's runs, one per pretraining, curves side by side
  (only when the run has several pretrainings);
- ``model-run.png``: a fitted model's run, its training and validation curves;
- ``models.png``: the experiment's Models page (the exported classifier and saliency model);
- ``logged-model.png``: the classifier's page (its signature, source run, artifacts);
- ``pipeline-run.png``: the pipeline run's overview: its description (headline and report).

Without ``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` (Debian: ``apt install chromium
chromium-driver``) the script prints why and exits 0. PNGs wider than ``--max-width`` are scaled down
with Pillow so that each stays small.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SETTLE_S = 6.0  # the UI is a single-page app: time for its requests and charts after each page load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session`` and everything it started."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Browser:
    """Headless Chromium through chromedriver's W3C WebDriver HTTP interface."""

    def __init__(self, width: int, height: int) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        wait_for(f"{self.base}/status", self.driver, "chromedriver", 60)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
                f"--window-size={width},{height}"]  # fmt: skip
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
        # --window-size is the window; the page's viewport is what a screenshot shows: make it width × height
        inner = self.js("return [window.innerWidth, window.innerHeight]")
        self._session("POST", "/window/rect", {"width": 2 * width - inner[0], "height": 2 * height - inner[1]})

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"chromedriver {method} {path}: {e.read().decode()[:500]}") from None

    def _session(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str, settle_s: float = SETTLE_S) -> None:
        self._session("POST", "/url", {"url": url})
        time.sleep(settle_s)

    def js(self, script: str, *args):
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def type(self, css: str, text: str, settle_s: float = 2.0) -> None:
        """Type ``text`` into the first element matching ``css`` (e.g. a chart search box)."""
        element = self._session("POST", "/element", {"using": "css selector", "value": css})
        self._session("POST", f"/element/{next(iter(element.values()))}/value", {"text": text})
        time.sleep(settle_s)

    def click_text(self, text: str, settle_s: float = 1.0) -> bool:
        """Click the first button or link whose text is ``text``; whether there was one."""
        found = self.js("const e = [...document.querySelectorAll('button, a, [role=button]')]"
                        ".find(e => e.innerText.trim() === arguments[0]); if (e) e.click(); return !!e;", text)
        time.sleep(settle_s)
        return bool(found)

    def screenshot(self, path: Path, max_width: int) -> None:
        path.write_bytes(base64.b64decode(self._session("GET", "/screenshot")))
        from PIL import Image

        with Image.open(path) as image:
            image.load()
        if image.width > max_width:
            image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
        # a UI has few colours: a 256-colour palette keeps the text sharp at a third of the size
        image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            stop(self.driver)


def ui_state(expanded: list[str], columns: list[str], search: str = "", hidden: list[str] = ()) -> dict:
    """The runs page's saved state (MLflow 3.17's ``ReactComponentState`` in ``localStorage``): runs
    ``expanded`` in the tree, ``columns`` shown, the runs ``search`` filter, runs ``hidden`` from charts."""
    order = ["attributes.`Run Name`", "runDateAndNestInfo", "attributes.`Dataset`", "duration", "attributes.`Source`",
             "attributes.`Models`", *columns]
    return {"searchFilter": search, "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL",
            "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
            "selectedColumns": columns, "columnOrder": order, "columnWidths": {"attributes.`Run Name`": 280},
            "runsExpanded": {r: True for r in expanded}, "runsPinned": [], "runsHidden": list(hidden),
            "runsVisibilityMap": {r: False for r in hidden}, "runsHiddenMode": "CUSTOM" if hidden else "SHOW_ALL",
            "hideEmptyCharts": True, "groupBy": None, "autoRefreshEnabled": False}  # fmt: skip


def set_state(browser: Browser, experiment_id: str, state: dict) -> None:
    """Store the UI's own settings for this experiment; they apply from the next page load."""
    browser.js("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
               "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
               f"localStorage.setItem('MLflowLocalStorage-1.1-ExperimentView-{experiment_id}-expandRows', 'true');"
               f"localStorage.setItem('MLflowLocalStorage-1.1-ExperimentPage-[\"{experiment_id}\"]-"
               "ReactComponentState', arguments[0]);", json.dumps(state))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="output_dir of a finished usssl run (holds mlflow.db)")
    parser.add_argument("--out", default="docs/img/mlflow", help="folder for the PNGs (default: docs/img/mlflow)")
    parser.add_argument("--port", type=int, default=5055, help="port for the temporary mlflow ui (default: 5055)")
    parser.add_argument("--width", type=int, default=1600, help="browser viewport width (default: 1600)")
    parser.add_argument("--height", type=int, default=1000, help="browser viewport height (default: 1000)")
    parser.add_argument("--max-width", type=int, default=1280, help="PNGs wider are scaled down (default: 1280)")
    args = parser.parse_args(argv)
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not Path(tool).is_file():
            print(f"skipped: {tool} not found (Debian: apt install chromium chromium-driver); no screenshots taken")
            return 0
    db = Path(args.run_dir).resolve() / "mlflow.db"
    if not db.is_file():
        print(f"error: {db} not found: give the output_dir of a finished usssl run", file=sys.stderr)
        return 2
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    experiment = next(e for e in client.search_experiments() if e.name != "Default")
    eid = experiment.experiment_id
    runs = client.search_runs([eid], max_results=1000)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    stages = {r.data.tags["usssl.stage"]: r for r in runs if "usssl.stage" in r.data.tags}
    pretrainings = [r for r in runs if r.data.tags.get("usssl.kind") == "pretraining"]
    models = [r for r in runs if "usssl.model" in r.data.tags]
    model = next((r for r in models if r.data.params.get("protocol") == "linear"  # one chart of each: train, val
                  and float(r.data.params.get("label_fraction", 0)) == 1.0), models[0] if models else None)
    logged = sorted(client.search_logged_models([eid]), key=lambda m: m.name != "plane_classifier")
    expanded = [parent.info.run_id] + [stages[s].info.run_id for s in ("pretrain", "evaluate") if s in stages]
    results = ["metrics.`macro_f1`", "metrics.`macro_f1_lo`", "metrics.`macro_f1_hi`"]
    grid = ["params.`init`", "params.`protocol`", "params.`label_fraction`"]
    kind = "tags.`usssl.kind` = '{}'".format

    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    server = subprocess.Popen([mlflow_bin, "ui", "--backend-store-uri", uri, "--workers", "1", "--host", "127.0.0.1",
                               "--port", str(args.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{args.port}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    browser = None
    try:
        wait_for(f"{base}/health", server, "mlflow ui")
        browser = Browser(args.width, args.height)

        def shoot(name: str, route: str, state: dict, query: str = "", charts: str = "", more: str = "") -> None:
            """``route`` under the experiment, in the model-training view, with the runs page's ``state``;
            then ``charts`` typed into the chart search box, and the button ``more`` clicked."""
            if state["searchFilter"]:  # the address's filter wins over the stored one once it has other keys
                query += "&searchFilter=" + urllib.parse.quote(state["searchFilter"])
            url = f"{base}/#/experiments/{eid}/{route}?workflowType=machine_learning{query}"
            browser.open(url, 1.0)  # localStorage belongs to the UI's origin: set it there, then reload
            set_state(browser, eid, state)
            browser.js("location.reload()")
            time.sleep(SETTLE_S)
            if charts:
                browser.type("input[placeholder='Search metric charts']", charts)
            if more:
                browser.click_text(more)
            browser.screenshot(out / name, args.max_width)

        shoot("runs.png", "runs", ui_state(expanded, ["attributes.`Dataset`", "attributes.`Source`", *results]))
        shoot("configurations.png", "runs", ui_state(expanded, [*grid, *results], kind("configuration")))
        shoot("configurations-chart.png", "runs", ui_state(expanded, results, kind("configuration"), expanded),
              "&compareRunsMode=CHART", charts="macro_f1")
        if len(pretrainings) > 1:
            shoot("pretrainings-chart.png", "runs", ui_state(expanded, [], kind("pretraining"), expanded),
                  "&compareRunsMode=CHART", charts="train/")
        if model is not None:
            shoot("model-run.png", f"runs/{model.info.run_id}/model-metrics", ui_state([], []))
        shoot("models.png", "models", ui_state([], []))
        if logged:
            shoot("logged-model.png", f"models/{logged[0].model_id}", ui_state([], []))
        shoot("pipeline-run.png", f"runs/{parent.info.run_id}", ui_state([], []), more="Show more")
    finally:
        if browser is not None:
            browser.close()
        stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
