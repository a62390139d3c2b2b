"""Where runs and models are tracked, and how the store is initialised safely.

Default: ``sqlite:///<root>/mlflow.db`` with artifacts under ``<root>/mlartifacts``, where root is
the project folder or the per-user data folder (``pipeline.locations``); ``MLFLOW_TRACKING_URI``
overrides (e.g. a tracking server). MLflow records artifact locations as
absolute paths, so when the project folder has moved, ``init_tracking`` rewrites the recorded
prefix of a SQLite store to the new location: moving the repository does not break it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import MsafError
from pipeline.locations import state_root

ARTIFACT_DIR = "mlartifacts"


def project_root() -> Path:
    """Where the store lives: the project folder, else the per-user data folder (never any other cwd)."""
    return state_root()


def default_uri() -> str:
    """The project's own SQLite store."""
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the project's store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise first-time creation/migration of a SQLite store (concurrent migrations fail)."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _relocate(db: Path, root: Path) -> None:
    """Rewrite artifact paths recorded under another project folder to this one."""
    new_prefix = str(root / ARTIFACT_DIR)
    marker = f"/{ARTIFACT_DIR}/"
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT artifact_location FROM experiments WHERE artifact_location LIKE ?", (f"%{marker}%",)
        ).fetchall()
        old_prefixes = {loc.split(marker)[0] + f"/{ARTIFACT_DIR}" for (loc,) in rows}
        for old in old_prefixes - {new_prefix, "file://" + new_prefix}:
            new = ("file://" + new_prefix) if old.startswith("file://") else new_prefix
            for table, column in (
                ("experiments", "artifact_location"),
                ("runs", "artifact_uri"),
                ("model_versions", "source"),
                ("model_versions", "storage_location"),
                ("logged_models", "artifact_location"),
            ):
                try:
                    con.execute(
                        f"UPDATE {table} SET {column} = replace({column}, ?, ?) WHERE {column} LIKE ?",
                        (old, new, f"{old}%"),
                    )
                except sqlite3.OperationalError:  # table or column absent in this schema version
                    continue


def init_tracking() -> str:
    """Point MLflow at the store, create/migrate it once (under a lock), relocate if moved."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # a tracking server that is down answers in seconds, not after MLflow's ~250 s of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    import mlflow
    from mlflow.tracking import MlflowClient

    for noisy in ("alembic", "mlflow"):  # after the import: importing mlflow sets its own level
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=r"mlflow\..*")

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with _store_lock(uri):
            MlflowClient(uri).search_experiments(max_results=1)  # creates and migrates the schema
            database = _sqlite_path(uri)
            if uri == default_uri() and database:  # the project's own store (MLflow exports MLFLOW_TRACKING_URI)
                _relocate(database, project_root())
    except Exception as exc:  # sqlalchemy, sqlite3 and MLflow each raise their own kinds
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise MsafError(
            f"the MLflow tracking store {uri} cannot be used ({reason}); run with --no-track "
            "(and --model), or point MLFLOW_TRACKING_URI at a new store "
            "(e.g. sqlite:///fresh-mlflow.db)"
        ) from None
    return uri


def experiment_id(name: str) -> str:
    """Get or create an experiment whose artifacts live in the project's ``mlartifacts/<name>``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    uri = tracking_uri()
    with _store_lock(uri):
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if _sqlite_path(uri) is not None:
            location = (project_root() / ARTIFACT_DIR / name).as_uri()
        return client.create_experiment(name, artifact_location=location)
