"""One Prefect API per survey, and no orphans.

With ``PREFECT_API_URL`` set (the user's server, or a test harness) that server is used. Otherwise
one temporary server is started for this process, exported through ``PREFECT_API_URL`` so Dask
workers started later report to it instead of starting their own, and bound to this process's
life with Linux's parent-death signal: ``kill -9`` of the survey takes the server with it.
Prefect's own ephemeral server is a plain child process that outlives a killed parent (~230 MB).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pipeline.errors import MsafError

# Run in the server process before it becomes uvicorn: SIGKILL it when its parent dies (the flag
# survives exec), and exit at once if the parent is already gone.
_BOUND_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"  # PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'uvicorn', *sys.argv[2:]])\n"
)


def free_port() -> int:
    """A TCP port free on localhost now (for the temporary Prefect API)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until the API server answers its health check; fail if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MsafError(
                f"the temporary Prefect server exited at start (status {process.returncode}); "
                "run `prefect server start` and export PREFECT_API_URL instead"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise MsafError(
        f"the temporary Prefect server did not answer within {timeout:.0f} s; run `prefect server "
        "start` and export PREFECT_API_URL instead"
    )


def send_pending_logs(timeout: float) -> None:
    """Send the run logs still queued for the API (a failed flow's last lines) before the temporary
    server stops; otherwise Prefect's log worker finds no server at exit and prints "Error logging to
    API". Only the log worker is drained: ``drain_all`` would stop every queue service of Prefect
    (their registry is shared), and the events worker then complains at exit."""
    from prefect.logging.handlers import APILogWorker

    drain = threading.Thread(target=APILogWorker.instance().drain, daemon=True, name="send-logs")
    drain.start()
    drain.join(timeout)  # a server that stopped answering cannot hold the exit for longer


class TemporaryServer:
    """A Prefect API server started for this process (uvicorn, bound to this process's life).

    Its output goes to a log file, not to this process's terminal: stopping it cancels the database
    work of requests still open (a Ctrl-C mid-survey), and SQLAlchemy logs each cancelled rollback
    as an error with its traceback, after the survey's one line. What it logged while in use is
    passed on to stderr when it stops; what it logs while stopping is dropped with the file."""

    def __init__(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        with tempfile.NamedTemporaryFile(prefix="msaf-prefect-server-", suffix=".log", delete=False) as log:
            self.log = Path(log.name)
            self.process = _launch(port, log)

    def stop(self) -> None:
        """Terminate it (killed if it does not exit within 10 s); pass on what it logged until now."""
        logged = self.log.read_bytes() if self.log.is_file() else b""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.unlink(missing_ok=True)
        if logged.strip():
            sys.stderr.write(logged.decode(errors="replace"))


_EARLY: list[TemporaryServer] = []  # started by ``server_started_early``, taken over by ``prefect_api``


@contextmanager
def server_started_early() -> Iterator[None]:
    """Start this process's temporary server now, so that it boots (~4 s) while the caller imports
    and validates (~4-7 s, on another core); ``prefect_api`` inside takes it over instead of starting
    one then. Not when ``PREFECT_API_URL`` is in the environment; a server nothing took over (the
    survey failed first, or Prefect's profile names a server) is stopped on the way out."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    server = TemporaryServer()
    _EARLY.append(server)
    try:
        yield
    finally:
        if server in _EARLY:
            _EARLY.remove(server)
            server.stop()


@contextmanager
def prefect_api(timeout: float = 120.0) -> Iterator[str]:
    """The API URL flows of this process (and their Dask workers) report to; see the module docstring."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    early = _EARLY.pop() if _EARLY else None
    if url := PREFECT_API_URL.value():
        if early is not None:
            early.stop()
        yield url
        return
    server = early or TemporaryServer()
    saved = os.environ.get("PREFECT_API_URL")
    try:
        wait_healthy(server.url, server.process, timeout)
        os.environ["PREFECT_API_URL"] = server.url  # inherited by Dask worker processes
        with temporary_settings(updates={PREFECT_API_URL: server.url}):
            try:
                yield server.url
            finally:
                send_pending_logs(timeout=5.0)  # while the worker for this URL is still the one found
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved
        server.stop()


def _launch(port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """The server process on ``port``: uvicorn serving Prefect's API app, SQLite beside PREFECT_HOME."""
    import importlib.util

    spec = importlib.util.find_spec("prefect")  # its folder, without importing Prefect (~1.3 s) here
    assert spec is not None and spec.submodule_search_locations
    app_dir = os.path.dirname(next(iter(spec.submodule_search_locations)))
    args = [
        "--app-dir",
        app_dir,
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    env = os.environ | {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    # its own session: a Ctrl-C at the terminal (SIGINT to the foreground group) must not stop the
    # server under the flow that is reporting its crash; ``prefect_api`` stops it after the logs are sent
    return subprocess.Popen(
        [sys.executable, "-c", _BOUND_LAUNCHER, str(os.getpid()), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
