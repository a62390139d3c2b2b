"""Prefect flows: thin orchestration around the `pipeline` library.

Analytics and telemetry are off unless the user turns them on.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _quiet_expected_errors() -> None:
    """An MsafError is an expected mistake, told in one line by whoever catches it (the CLI): Prefect's
    run loggers would print it again with a traceback, so their records of it are dropped."""
    import logging

    from pipeline.errors import MsafError

    def expected(record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, MsafError) or "MsafError" in record.getMessage())

    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine", "prefect.task_engine"):
        logging.getLogger(name).addFilter(expected)


_quiet_expected_errors()
