"""The temporary Prefect API of a survey process: started early, taken over once, never left running."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

EARLY_THEN_TAKEN_OVER = """
import os, urllib.request
os.environ.pop("PREFECT_API_URL", None)
from flows.server import _EARLY, prefect_api, server_started_early

with server_started_early():  # booting while this process goes on
    (early,) = _EARLY
    assert early.process.poll() is None
    with prefect_api() as url:  # takes the early server over instead of starting a second one
        assert url == early.url and not _EARLY and os.environ["PREFECT_API_URL"] == url
        with urllib.request.urlopen(url + "/health", timeout=10) as answer:
            assert answer.status == 200
    assert early.process.poll() is not None and "PREFECT_API_URL" not in os.environ  # stopped with the flow

with server_started_early():  # a survey that fails before its flow: nothing takes the server over
    (unused,) = _EARLY
assert unused.process.poll() is not None and not _EARLY  # stopped on the way out

os.environ["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # the user's server: none is started
with server_started_early():
    assert not _EARLY
print("ok")
"""


def test_a_server_started_early_is_the_one_the_flow_uses_and_none_outlives_its_survey():
    """`msaf survey` starts Prefect's API before it loads its modules and validates (each ~4 s, the
    server on another core), so the flow finds it up; a tiny survey took 13.2 s, now 10.3 s."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", EARLY_THEN_TAKEN_OVER], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"


LOGGED_THEN_STOPPED = """
import os
os.environ.pop("PREFECT_API_URL", None)
from flows.server import TemporaryServer, wait_healthy

server = TemporaryServer()
wait_healthy(server.url, server.process, 120)
assert server.log.is_file() and server.log.name.startswith("msaf-prefect-server-")
with server.log.open("ab") as log:  # as if the server had logged an error while the survey used it
    log.write(b"ERROR | the server logged this while in use\\n")
server.stop()
assert server.process.poll() is not None and not server.log.exists()
print("ok")
"""


def test_the_servers_output_reaches_stderr_only_from_its_log_when_it_stops():
    """Stopping the server cancels its open requests' database work, and SQLAlchemy printed a
    traceback per cancelled rollback after a Ctrl-C's one line; its output now goes to a log file,
    passed on up to the stop and dropped after it."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", LOGGED_THEN_STOPPED], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
    assert done.stderr.strip().splitlines() == ["ERROR | the server logged this while in use"]
