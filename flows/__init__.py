"""Prefect flows: thin orchestration around the `pipeline` library.

Analytics and telemetry are off unless the user turns them on.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


RUNNER_CANCELLED = "cancelled by the task runner"  # Prefect's CancelledError for a run its task runner cancelled


def _quiet_expected_errors() -> None:
    """An MsafError is an expected mistake, and a Ctrl-C an expected stop, each told in one line by
    whoever catches it (the CLI): Prefect's run loggers would print them again (a traceback, "Crash
    detected!"), so their records of them are dropped, and so are, after a Ctrl-C, those of the
    tasks the task runner then cancels (chunks still waiting for a thread: seen on a loaded machine).

    A task run the task runner cancels is never news: it does so only while the flow is already
    ending, and whatever ends the flow (a full disk, a bug) is reported on its own. With one thread,
    the chunk after a failed one starts on the freed thread and meets the runner's cancel check just
    as the flow shuts down (seen in CI after a full disk), so those records are dropped too."""
    import asyncio
    import concurrent.futures
    import logging

    from pipeline.errors import MsafError
    from pipeline.stop import Stopped, stop_requested

    told = ("MsafError", f"{Stopped.__name__}: ", "aborted by an interrupt signal")
    cancelled = (asyncio.CancelledError, concurrent.futures.CancelledError)

    def expected(record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if isinstance(exc, MsafError | Stopped | KeyboardInterrupt) or any(t in message for t in told):
            return False
        if RUNNER_CANCELLED in message or (exc is not None and RUNNER_CANCELLED in str(exc)):
            return False
        return not (stop_requested() and (isinstance(exc, cancelled) or "CancelledError" in message))

    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine", "prefect.task_engine"):
        logging.getLogger(name).addFilter(expected)


_quiet_expected_errors()
