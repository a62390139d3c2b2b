"""Real Prefect flow runs: local and Dask engines, artifacts, resume after SIGKILL, worker loss, inbox."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.conftest import cpu_survey, write_raster

pytestmark = pytest.mark.slow
MSAF = str(Path(sys.executable).with_name("msaf"))
OVERRIDES = {"device": "cpu", "gsd_policy": "ignore", "block": 64, "batch": 4}


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def survey_request(ortho: Path, out: Path, model: Path, **fields):
    """An untracked survey request with the built-in settings plus OVERRIDES."""
    from pipeline.config import load_params_or_defaults
    from pipeline.survey_plan import SurveyRequest

    params = load_params_or_defaults(None, OVERRIDES)
    return SurveyRequest(ortho=str(ortho), out=str(out), params=params, model=str(model), track=False, **fields)


@pytest.fixture(scope="module")
def reference(surveyed) -> np.ndarray:
    """The library engine's mask of the crack mosaic (block size does not change it)."""
    return read(surveyed / "mask.tif")


def test_local_flow_matches_the_engine_and_publishes_artifacts(
    prefect_harness, tmp_path, tiny_model, crack_mosaic, reference
):
    from prefect.client.orchestration import get_client

    from flows.survey import run_survey_flow

    outcome = run_survey_flow(survey_request(crack_mosaic[0], tmp_path / "out", tiny_model, chunk_blocks=16))
    np.testing.assert_array_equal(read(tmp_path / "out" / "mask.tif"), reference)
    assert outcome.report and outcome.report.defects > 0 and (tmp_path / "out" / "report.html").is_file()
    assert (outcome.record.tiling.blocks == 99 and not (tmp_path / "out" / ".msaf-blocks").exists()) or not list(
        (tmp_path / "out" / ".msaf-blocks").rglob("*.blk")
    )
    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_artifacts() if a.key}
    assert {"survey-progress", "defect-summary", "survey-outputs"} <= set(artifacts)
    assert float(artifacts["survey-progress"].data) == pytest.approx(100.0)
    assert "mask.tif" in artifacts["survey-outputs"].data
    states = {row["condition state"]: row["area m²"] for row in json.loads(artifacts["condition-states"].data)}
    assert list(states)[:1] == ["CS1"] and sum(states.values()) == pytest.approx(
        sum(outcome.report.condition_m2.values()), abs=1e-3
    )


def test_dask_engine_on_a_local_cluster_gives_the_same_mask(
    dask_cluster, tmp_path, tiny_model, crack_mosaic, reference
):
    from flows.survey import run_survey_flow

    cluster, _ = dask_cluster
    run_survey_flow(
        survey_request(crack_mosaic[0], tmp_path / "out", tiny_model, report=False, chunk_blocks=8),
        engine="dask",
        dask_address=cluster.scheduler_address,
    )
    np.testing.assert_array_equal(read(tmp_path / "out" / "mask.tif"), reference)


def test_a_killed_dask_worker_does_not_change_the_result(dask_cluster, tmp_path, tiny_model, crack_mosaic, reference):
    from flows.survey import run_survey_flow

    cluster, client = dask_cluster
    out = tmp_path / "out"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_survey_flow(
                survey_request(crack_mosaic[0], out, tiny_model, report=False, chunk_blocks=4),
                engine="dask",
                dask_address=cluster.scheduler_address,
            )
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline and thread.is_alive() and len(list(out.glob(".msaf-blocks/*/block_*.blk"))) < 8:
        time.sleep(0.05)
    victim = next(iter(client.run(os.getpid).values()))
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and errors == []
    assert victim not in client.run(os.getpid).values()  # the worker really died (the nanny restarted it)
    np.testing.assert_array_equal(read(out / "mask.tif"), reference)


def test_survey_killed_with_sigkill_resumes_and_redoes_only_missing_blocks(
    tmp_path, tiny_model, crack_mosaic, reference
):
    out = tmp_path / "out"
    command = [  # 48 blocks of 96 px
        MSAF,
        *cpu_survey(crack_mosaic[0], out, tiny_model, "--block", "96", "--batch", "4", "--no-report", "--no-track"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None and len(list(out.glob(".msaf-blocks/*/block_*.blk"))) < 20:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list(out.glob(".msaf-blocks/*/block_*.blk")))
    assert finished >= 20 and not (out / "mask.tif").exists()
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "survey.json").read_text())
    tiling = record["tiling"]
    assert finished <= tiling["blocks_reused"] < tiling["blocks"]  # only the missing blocks were redone
    np.testing.assert_array_equal(read(out / "mask.tif"), reference)


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (from /proc), with its command line."""
    children: dict[int, list[int]] = {}
    commands = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = commands.get(child, "")
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_a_survey_leaves_no_process_behind(tmp_path, tiny_model, crack_mosaic):
    out = tmp_path / "out"
    command = [
        MSAF,
        *cpu_survey(crack_mosaic[0], out, tiny_model, "--block", "48", "--batch", "4", "--no-report", "--no-track"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None and not list(out.glob(".msaf-blocks/*/block_*.blk")):
        time.sleep(0.05)
    below = _descendants(process.pid)
    assert any("uvicorn" in command or "prefect.server" in command for command in below.values()), below
    os.kill(process.pid, signal.SIGKILL)  # the survey only, not its process group
    process.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(pid) for pid in below):
        time.sleep(0.1)
    assert not [command for pid, command in below.items() if _alive(pid)]


def test_a_dask_survey_starts_one_api_server_and_its_workers_report_to_it(
    tmp_path, tiny_model, crack_mosaic, reference
):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    command = [
        MSAF,
        *cpu_survey(
            crack_mosaic[0],
            out,
            tiny_model,
            "--block",
            "128",  # 30 blocks: enough for both workers, and a fraction of the time of tiny blocks
            "--batch",
            "4",
            "--no-report",
            "--no-track",
            "--engine",
            "dask",
            "--dask-workers",
            "2",
        ),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    servers, workers = 0, 0
    while process.poll() is None:
        below = _descendants(process.pid).values()
        servers = max(servers, sum("uvicorn" in c for c in below))
        workers = max(workers, sum("multiprocessing" in c or "dask" in c or "spawn" in c for c in below))
        time.sleep(0.2)
    assert process.returncode == 0, process.stderr.read()[-2000:]
    assert servers == 1 and workers >= 2  # Prefect's default: one more temporary server per worker process
    np.testing.assert_array_equal(read(out / "mask.tif"), reference)


def test_inbox_processes_every_file_exactly_once(prefect_harness, tmp_path, tiny_model):
    from flows.inbox import inbox_flow
    from flows.ledger import Ledger
    from pipeline.fingerprint import earlier_file_fingerprint, file_fingerprint

    inbox, out = tmp_path / "inbox", tmp_path / "surveys"
    inbox.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        write_raster(tmp_path / f"{name}.tif", rng.integers(0, 256, (3, 90, 110), dtype=np.uint8))
    kwargs = {
        "out": str(out),
        "model": str(tiny_model),
        "params_path": str(tmp_path / "none.yaml"),
        "overrides": {"device": "cpu", "gsd_policy": "ignore"},
        "track": False,
        "settle_seconds": 0,
    }
    for name in ("a", "b"):
        shutil.copy(tmp_path / f"{name}.tif", inbox / f"{name}.tif")
    first = inbox_flow(inbox=str(inbox), **kwargs)
    shutil.copy(tmp_path / "c.tif", inbox / "c.tif")
    shutil.copy(tmp_path / "a.tif", inbox / "a-renamed-copy.tif")  # same content: not processed again
    second = inbox_flow(inbox=str(inbox), **kwargs)
    assert len(first) == 2 and len(second) == 1 and Path(second[0]).name.startswith("c-")
    done = Ledger(out / ".ledger").done()
    assert sorted(Path(d["source"]).name for d in done) == ["a.tif", "b.tif", "c.tif"]
    assert all((Path(d["survey"]) / "mask.tif").is_file() for d in done)
    from flows import ledger as ledger_module

    hashed: list[Path] = []
    real_fingerprint = ledger_module.file_fingerprint
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger_module, "file_fingerprint", lambda path: hashed.append(path) or real_fingerprint(path))
        assert inbox_flow(inbox=str(inbox), **kwargs) == []
    assert hashed == []  # nothing changed since the last run: no file is read again
    # the ledger as a release before BLAKE3 fingerprints left it (BLAKE2b keys): nothing is surveyed again
    for record in (out / ".ledger").glob("*.done"):
        source = json.loads(record.read_text())["source"]
        record.rename(record.with_name(f"{earlier_file_fingerprint(source)}.done"))
    assert inbox_flow(inbox=str(inbox), **kwargs) == []
    keys = sorted(p.stem for p in (out / ".ledger").glob("*.done"))
    assert keys == sorted(file_fingerprint(inbox / f"{name}.tif") for name in "abc")  # each re-keyed to BLAKE3


def test_inbox_keeps_untrusted_files_in_their_box_and_goes_on_after_a_failure(prefect_harness, tmp_path, tiny_model):
    from flows.inbox import inbox_flow
    from flows.ledger import Ledger

    inbox, out, outside = tmp_path / "inbox", tmp_path / "surveys", tmp_path / "private"
    inbox.mkdir()
    outside.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        write_raster(inbox / f"{name}.tif", rng.integers(0, 256, (3, 70, 90), dtype=np.uint8))
    write_raster(outside / "secret.tif", rng.integers(0, 256, (3, 70, 90), dtype=np.uint8))
    (inbox / "escape.tif").symlink_to(outside / "secret.tif")  # a link out of the inbox: never followed
    whole = (inbox / "a.tif").read_bytes()
    (inbox / "stalled.tif").write_bytes(whole[: len(whole) // 2])  # half a file that stopped arriving
    (inbox / "arriving.tif").write_bytes(whole[: len(whole) // 3])  # half a file still being copied
    (inbox / "passwd.vrt").write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="8"><VRTRasterBand dataType="Byte" '
        'band="1" subClass="VRTRawRasterBand"><SourceFilename relativeToVRT="0">'
        "/etc/passwd</SourceFilename></VRTRasterBand></VRTDataset>"
    )
    settled = time.time() - 3600
    for path in inbox.iterdir():
        if path.name != "arriving.tif":
            os.utime(path, (settled, settled), follow_symlinks=False)
    processed = inbox_flow(
        inbox=str(inbox),
        out=str(out),
        model=str(tiny_model),
        params_path=str(tmp_path / "x.yaml"),
        overrides={"device": "cpu", "gsd_policy": "ignore"},
        track=False,
        settle_seconds=60,
    )
    assert sorted(Path(p).name.split("-")[0] for p in processed) == ["a", "b"]
    ledger = Ledger(out / ".ledger")
    failed = {Path(f["source"]).name: f["error"] for f in ledger.failed()}
    assert set(failed) == {"stalled.tif", "passwd.vrt"}
    assert "truncated" in failed["stalled.tif"] and "VRT" in failed["passwd.vrt"]
    recorded = {Path(d["source"]).name for d in ledger.done()}
    assert recorded == {"a.tif", "b.tif"}  # escape.tif and arriving.tif were never touched
    assert not any("secret" in p.name or "escape" in p.name for p in out.iterdir())
    # refused files leave no survey folder behind: only the two surveys and the ledger
    # (and the change report of b against a: the same ground)
    assert sorted(p.name.split("-")[0] for p in out.iterdir()) == [".ledger", "a", "b", "changes"]


def test_the_inbox_compares_each_survey_with_the_one_before_it(prefect_harness, tmp_path, tiny_model):
    """One inbox, three flights: a deck in 2025 and in 2026 (job details beside each; the second 37 mm
    east and 21 mm north of the first, in other light) and a file whose job details are wrong. The
    2026 deck is compared with the 2025 one, registered on the two orthomosaics; the first deck with
    nothing; the bad file fails with the reason. A 2027 flight dropped in later is compared with
    2026, and the deck's crack history over its three surveys is written under its structure id.
    (Which earlier survey is chosen, by structure, date and footprint: tests/report/test_epochs.py.)"""
    import geopandas as gpd

    from flows.inbox import inbox_flow
    from flows.ledger import Ledger
    from pipeline.survey_record import read_survey_record
    from tests.report.test_registration import _ortho, _reflown, _wall

    inbox, out = tmp_path / "inbox", tmp_path / "surveys"
    inbox.mkdir()
    wall = _wall(0)[:420, :520]
    _ortho(inbox / "deck-2025.tif", wall)
    _ortho(inbox / "deck-2026.tif", _reflown(_wall(0), 37, 21)[:420, :520])
    _ortho(inbox / "bad.tif", wall[::-1].copy())  # other bytes: the ledger keys files by content
    (inbox / "deck-2025.yaml").write_text("structure_id: BR-7\nflight_date: 2025-06-01\n")
    (inbox / "deck-2026.yaml").write_text("structure_id: BR-7\nflight_date: 2026-06-01\n")
    (inbox / "bad.yaml").write_text("flight_date: 2026-13-45\n")
    run = {"inbox": str(inbox), "out": str(out), "model": str(tiny_model), "params_path": str(tmp_path / "none.yaml")}
    run |= {"overrides": {"device": "cpu", "gsd_policy": "ignore"}, "track": False, "settle_seconds": 0}
    processed = inbox_flow(**run)
    assert sorted(Path(p).name.split("-")[1] for p in processed) == ["2025", "2026"]
    ledger = Ledger(out / ".ledger")
    done = {Path(d["source"]).stem: d for d in ledger.done()}
    (failed,) = ledger.failed()
    assert Path(failed["source"]).name == "bad.tif" and "bad.yaml: month must be in 1..12" in failed["error"]
    assert "compared_with" not in done["deck-2025"]
    deck = done["deck-2026"]
    assert deck["compared_with"] == done["deck-2025"]["survey"], deck
    assert deck["registration"].startswith("new survey moved -37.0 mm east, -21."), deck["registration"]
    changes = Path(deck["changes"])
    assert (
        changes.parent == out / "changes"
        and changes.name == f"{Path(done['deck-2025']['survey']).name}--{Path(deck['survey']).name}"
    )
    assert (changes / "changes.gpkg").is_file() and (changes / "report.html").is_file()
    assert read_survey_record(Path(deck["survey"])).job == {"structure_id": "BR-7", "flight_date": "2026-06-01"}
    assert "history" not in deck  # two surveys: the change report is the history

    _ortho(inbox / "deck-2027.tif", _reflown(_wall(0), -25, 30)[:420, :520])
    (inbox / "deck-2027.yaml").write_text("structure_id: BR-7\nflight_date: 2027-06-01\n")
    (later,) = inbox_flow(**run)
    third = next(d for d in Ledger(out / ".ledger").done() if d["survey"] == later)
    assert third["compared_with"] == deck["survey"] and third["history"] == str(out / "histories" / "BR-7")
    history = out / "histories" / "BR-7"
    cracks = len(gpd.read_file(history / "history.gpkg", layer="crack_history"))
    assert third["trends"].startswith(f"{cracks} cracks over 3 surveys: ")
    surveys = gpd.read_file(history / "history.gpkg", layer="surveys")
    assert surveys["flown"].tolist() == ["2025-06-01", "2026-06-01", "2027-06-01"]
    assert len(list((history / "pairs").iterdir())) == 2 and len(list((history / "to_latest").iterdir())) == 1


def test_ledger_claims_are_exclusive_and_crashed_claims_are_taken_over(tmp_path):
    from flows.ledger import Ledger

    ledger = Ledger(tmp_path)
    assert ledger.claim("k1", "a.tif") and not ledger.claim("k1", "a.tif")  # a live claim blocks
    (tmp_path / "k2.claim").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename}))
    assert ledger.claim("k2", "b.tif")  # its process is gone
    ledger.finish("k1", {"source": "a.tif"})
    assert not ledger.claim("k1", "a.tif") and ledger.is_done("k1")


def test_the_ledger_hashes_a_file_again_only_when_the_file_system_says_it_changed(tmp_path, monkeypatch):
    """A run reads only files that changed since the runs before; a file rewritten in place with its
    size and modification time kept is still read again (its change time moved)."""
    from flows import ledger as ledger_module
    from flows.ledger import FINGERPRINTS, Ledger

    hashed: list[str] = []
    real_fingerprint = ledger_module.file_fingerprint

    def counted(path: Path) -> str:
        hashed.append(path.name)
        return real_fingerprint(path)

    monkeypatch.setattr(ledger_module, "file_fingerprint", counted)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    a.write_bytes(b"a" * 1000)
    b.write_bytes(b"b" * 1000)
    root = tmp_path / "ledger"
    first = Ledger(root)
    keys = {path.name: first.fingerprint(path) for path in (a, b)}
    first.keep_fingerprints()
    second = Ledger(root)
    assert {path.name: second.fingerprint(path) for path in (a, b)} == keys
    second.keep_fingerprints()
    assert hashed == ["a.tif", "b.tif"]  # the second run read nothing
    before = b.stat()
    time.sleep(0.05)  # past the file system's clock tick
    with open(b, "r+b") as fh:
        fh.write(b"B")
    os.utime(b, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (b.stat().st_size, b.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    third = Ledger(root)
    assert third.fingerprint(b) == real_fingerprint(b) != keys["b.tif"] and hashed[-2:] == ["b.tif", "b.tif"]
    third.keep_fingerprints()
    assert set(json.loads((root / FINGERPRINTS).read_text())) == {str(b)}  # a was not looked at: it drops out
    (root / FINGERPRINTS).write_text("{not json")
    assert Ledger(root).fingerprint(a) == keys["a.tif"] and hashed[-1] == "a.tif"  # a broken file: hashed again


def test_a_ledger_from_before_blake3_is_rekeyed_and_only_older_files_are_hashed_twice(tmp_path, monkeypatch):
    """Records keyed by BLAKE2b move to the file's BLAKE3 key when the file comes by; a file newer
    than the first run that found such records is never hashed the earlier way."""
    from flows import ledger as ledger_module
    from flows.ledger import CHANGE_RECORD, Ledger
    from pipeline.fingerprint import earlier_file_fingerprint, file_fingerprint

    fresh = Ledger(tmp_path / "fresh")  # nothing from before: no change noted, nothing hashed twice
    assert fresh._earlier_before is None and not (tmp_path / "fresh" / CHANGE_RECORD).exists()
    old, failed, new = (tmp_path / f"{name}.tif" for name in ("old", "failed", "new"))
    for path in (old, failed, new):
        path.write_bytes(path.name.encode() * 100)
    root = tmp_path / "ledger"
    root.mkdir()
    (root / f"{earlier_file_fingerprint(old)}.done").write_text(json.dumps({"source": str(old)}))
    (root / f"{earlier_file_fingerprint(failed)}.failed").write_text(json.dumps({"error": "bad CRS"}))
    hour_ago = time.time() - 3600
    for path in (old, failed):
        os.utime(path, (hour_ago, hour_ago))
    ledger = Ledger(root)
    assert ledger._earlier_before is not None and Ledger(root)._earlier_before == ledger._earlier_before
    assert ledger.adopt_earlier(old, file_fingerprint(old)) and ledger.adopt_earlier(failed, file_fingerprint(failed))
    assert not ledger.claim(file_fingerprint(old), str(old)) and not ledger.claim(file_fingerprint(failed), str(failed))
    moved = json.loads((root / f"{file_fingerprint(old)}.done").read_text())
    assert moved == {"source": str(old), "earlier_key": earlier_file_fingerprint(old)}
    assert [p.suffix for p in root.glob("*.*") if len(p.stem) == 40] == []  # nothing left under an earlier key
    hashed: list[Path] = []
    monkeypatch.setattr(ledger_module, "earlier_file_fingerprint", lambda path: hashed.append(path) or "0" * 40)
    later = time.time() + 60  # arrived after the change
    os.utime(new, (later, later))
    assert not ledger.adopt_earlier(new, file_fingerprint(new)) and hashed == []
    assert ledger.claim(file_fingerprint(new), str(new))


def test_deployment_served_against_a_real_prefect_server(prefect_harness, tmp_path, tiny_model):
    """``msaf schedule`` in a process of its own serves the inbox deployment on the API server the
    harness started (a real one, over HTTP); a run of the deployment surveys the delivered file."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    assert api.startswith("http://"), api
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "home"),
        "PREFECT_API_URL": api,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # the served runner looks for scheduled runs every second
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    inbox, out = tmp_path / "inbox", tmp_path / "surveys"
    inbox.mkdir()
    write_raster(inbox / "deck.tif", np.random.default_rng(5).integers(0, 256, (3, 80, 96), dtype=np.uint8))
    os.utime(inbox / "deck.tif", (time.time() - 600, time.time() - 600))  # delivered, settled
    params = tmp_path / "params.yaml"
    params.write_text("survey: {device: cpu, gsd_policy: ignore}\n")
    served = subprocess.Popen(
        [
            MSAF,
            "schedule",
            "--inbox",
            str(inbox),
            "--out",
            str(out),
            "--cron",
            "0 2 * * *",
            "--model",
            str(tiny_model),
            "--params",
            str(params),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        flow_run = None
        deadline = time.time() + 120
        while flow_run is None and time.time() < deadline:
            try:
                flow_run = run_deployment("msaf-inbox/msaf-inbox", timeout=240, poll_interval=1)
            except Exception:  # the deployment is not registered yet
                time.sleep(1)
        assert flow_run is not None and flow_run.state.is_completed(), flow_run and flow_run.state
        surveys = [p for p in out.iterdir() if p.name.startswith("deck-")]
        ledger = {p.name: p.read_text() for p in (out / ".ledger").glob("*.*")}
        assert len(surveys) == 1 and (surveys[0] / "mask.tif").is_file(), ledger
    finally:
        os.killpg(served.pid, signal.SIGTERM)
        served.wait(timeout=30)


def test_schedule_without_a_server_says_how_to_start_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path)}
    result = subprocess.run(
        [MSAF, "schedule", "--inbox", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2 and "prefect server start" in result.stderr


def test_the_cancellations_a_failing_or_stopped_flow_causes_are_not_logged_again():
    """On a loaded machine a Ctrl-C found a chunk of blocks still waiting for a thread, and in CI the
    chunk after one that hit a full disk started on the freed thread: the task runner cancelled it
    and Prefect printed two "Crash detected! ... CancelledError" lines above the CLI's one line. The
    task runner's cancellations are always dropped (it cancels only while the flow is ending, for a
    reason reported on its own; the full-disk case runs for real in test_one_line_errors); other
    cancellations only after a stop request; real failures never."""
    import logging

    import flows  # noqa: F401 - installs the filter
    from pipeline.stop import clear_stop, request_stop

    logger = logging.getLogger("prefect.task_runs")

    def record(message: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.ERROR, __file__, 1, message, (), None)

    by_runner = record(
        "Crash detected! Execution was interrupted by an unexpected exception: "
        "CancelledError: Task run cancelled by the task runner"
    )
    other = record("Crash detected! Execution was interrupted by an unexpected exception: CancelledError: ")
    try:
        assert not logger.filter(by_runner)
        assert logger.filter(other)  # no stop: some other cancellation is news
        request_stop()
        assert not logger.filter(by_runner) and not logger.filter(other)
    finally:
        clear_stop()
    assert logger.filter(record("a real failure"))
