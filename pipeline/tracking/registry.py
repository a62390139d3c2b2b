"""The model registry: candidates, the promotion gate and the champion a survey uses."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import MsafError
from pipeline.fsutil import write_json
from pipeline.locations import shipped_model
from pipeline.metrics.summary import EvaluationSummary
from pipeline.tracking.gate import GateVerdict
from pipeline.tracking.store import project_root

SCORE_TAG = "val_fg_tol_f1"


@dataclass(frozen=True)
class Decision:
    """What the promotion gate decided for one candidate."""

    name: str
    version: str
    score: float
    champion_version: str | None
    champion_score: float | None
    promoted: bool
    reason: str = ""  # the gate's words: what regressed, or why it was promoted
    survey: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # per set, through the survey

    def as_dict(self) -> dict[str, Any]:
        """The decision as a JSON-friendly dict."""
        return asdict(self)

    def write(self, path: Path) -> None:
        """The register stage's output (metrics/registry.json)."""
        write_json(path, self.as_dict())

    @classmethod
    def read(cls, path: Path) -> Decision:
        """Read a decision written by ``write``; a damaged file is one clear line."""
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise MsafError(f"{path} is not a registry decision ({str(exc)[:80]}); rerun the register stage") from None


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _champion(name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register_candidate(
    model_uri: str,
    score: float,
    name: str,
    alias: str,
    run_id: str | None = None,
    verdict: GateVerdict | None = None,
) -> Decision:
    """Register a model version; move ``alias`` to it as ``verdict`` says (the gate that scored both
    on the same data), or without one only if its score >= the champion's recorded score."""
    import mlflow
    from mlflow.utils.logging_utils import disable_logging, enable_logging

    client = _client()
    disable_logging()  # MLflow prints "Successfully registered model ..." on stderr; the caller reports
    try:
        version = mlflow.register_model(model_uri, name, tags={SCORE_TAG: str(score)}).version
    finally:
        enable_logging()
    if run_id:
        client.set_model_version_tag(name, version, "run_id", run_id)
    champion = _champion(name, alias)
    champion_score = float(champion.tags.get(SCORE_TAG, "-inf")) if champion else None
    promoted = verdict.promoted if verdict else champion_score is None or score >= champion_score
    if promoted:
        client.set_registered_model_alias(name, alias, version)
    reason = verdict.reason if verdict else ""
    return Decision(
        name,
        str(version),
        score,
        str(champion.version) if champion else None,
        champion_score,
        promoted,
        reason,
        verdict.survey if verdict else {},
    )


def promote(name: str, version: str, alias: str) -> None:
    """Move ``alias`` to a version by hand (bypassing the score gate)."""
    from mlflow.exceptions import MlflowException

    try:
        _client().set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise MsafError(f"cannot promote {name} version {version}: {exc.message.splitlines()[0]}") from None


def list_versions(name: str) -> list[dict[str, Any]]:
    """Registered versions of ``name`` with their aliases, score tag and run id."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        aliases = client.get_registered_model(name).aliases  # search results carry no aliases
    except MlflowException:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    versions = client.search_model_versions(f"name='{name}'")
    return [
        {
            "version": str(v.version),
            "aliases": ",".join(by_version.get(str(v.version), [])),
            SCORE_TAG: v.tags.get(SCORE_TAG, ""),
            "run_id": v.run_id or v.tags.get("run_id", ""),
            "created": v.creation_timestamp,
        }
        for v in sorted(versions, key=lambda v: int(v.version))
    ]


def show(name: str, ref: str) -> dict[str, Any]:
    """A version by number or alias (e.g. ``champion``)."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        version = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    except MlflowException:
        kind = "version" if ref.isdigit() else "alias"
        raise MsafError(f"registered model {name!r} has no {kind} {ref!r}; see `msaf models list`") from None
    return {
        "name": name,
        "version": str(version.version),
        "aliases": version.aliases,
        "tags": version.tags,
        "source": version.source,
        "run_id": version.run_id,
    }


def checkpoint_for(name: str, ref: str) -> Path:
    """Local path of the checkpoint of a version (by number or alias), cached in the project."""
    import mlflow

    info = show(name, ref)
    cache = project_root() / ".msaf-cache" / "models" / name / str(info["version"])
    target = cache / "checkpoint.safetensors"
    if not target.is_file():
        downloaded = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{info['version']}"))
        found = next(downloaded.rglob("*.safetensors"), None)
        if found is None:
            raise MsafError(f"{name} version {info['version']} has no safetensors checkpoint artifact")
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copy(found, target)
    return target


def resolve_default_model(name: str, alias: str, shipped: Path | None = None) -> tuple[Path, str]:
    """The champion's checkpoint; without one, register the shipped model as the first champion.

    Returns (checkpoint path, description such as ``models:/msaf-defects@champion (v3)``).
    """
    import mlflow

    from pipeline.checkpoint import read_metadata
    from pipeline.tracking.runs import log_model
    from pipeline.tracking.store import experiment_id

    champion = _champion(name, alias)
    if champion is None:
        shipped = shipped or shipped_model()
        if not shipped.is_file():
            raise MsafError(
                f"no model: the registry has no {name}@{alias} and the shipped model {shipped} is "
                "missing; pass --model or train one (`dvc repro`)"
            )
        val = read_metadata(shipped).validation()
        score = val.score if val else 0.0
        with mlflow.start_run(experiment_id=experiment_id("training"), run_name="shipped-default-model") as run:
            mlflow.set_tag("source", "shipped with msaf-pipeline")
            uri = log_model(shipped)
        register_candidate(uri, score, name, alias, run.info.run_id)
        champion = _champion(name, alias)
    return checkpoint_for(name, alias), f"models:/{name}@{alias} (v{champion.version})"


def _run_exists(run_id: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient().get_run(run_id)
    except MlflowException:
        return False
    return True


def register_checkpoint(
    checkpoint: Path,
    evaluation: EvaluationSummary,
    name: str,
    alias: str,
    run_id: str | None = None,
    model_uri: str | None = None,
    verdict: GateVerdict | None = None,
) -> Decision:
    """The register stage: log the evaluation on the training run (or log the checkpoint in a run of
    its own when that run is in another store), register the version, gate the champion alias by
    ``verdict`` (else on ``evaluation.score``)."""
    import mlflow

    from pipeline.tracking.runs import log_model
    from pipeline.tracking.store import experiment_id

    if run_id and not _run_exists(run_id):  # trained against another store: log the checkpoint afresh
        model_uri = run_id = None
    if not model_uri or not run_id:
        with mlflow.start_run(experiment_id=experiment_id("training"), run_name="registered-checkpoint") as run:
            model_uri, run_id = log_model(checkpoint), run.info.run_id
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"eval_{k}": v for k, v in evaluation.to_json().items() if isinstance(v, float)})
    return register_candidate(model_uri, evaluation.score, name, alias, run_id, verdict)
