"""What the tracker checks around its runs: whether a remote tracking server answers (within
``SERVER_TIMEOUT_S``, not minutes of MLflow's retries) and whether the process that left a run
RUNNING is gone (``process_tags`` / ``process_gone``). Used by ``usssl.engine.tracking``.
"""

from __future__ import annotations

import base64
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

from usssl.errors import ConfigError

SERVER_TIMEOUT_S = 3.0
"""How long a remote tracking server may take to answer before a run is refused."""
DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


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
