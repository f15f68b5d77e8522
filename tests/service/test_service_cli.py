"""The `quantray` HTTP CLI end to end: keys (database), serve-less API + fake Ray, then
submit --wait with a progress bar, status, list, results, logs, cancel, resume, models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.api_client import ApiClient, ApiClientError
from service.app import create_app
from service.cli import main

SPEC_YAML = """name: cli-job
dataset: {uri: "sample:sp500", symbols: 2}
models: [ols, ridge]
"""


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _play_ray(fake: Any, storage: Path, stop: threading.Event, qr: Any) -> None:
    """Stand-in for the job driver: progress, then a leaderboard, then SUCCEEDED."""
    while not stop.is_set():
        for sid, job in list(fake.jobs.items()):
            if job["status"] != "PENDING" or job["metadata"].get("quantray_owner") != "alice":
                continue
            job_dir = storage / "jobs" / job["metadata"]["quantray_job_id"]
            (job_dir / "results").mkdir(parents=True, exist_ok=True)
            (job_dir / "progress.json").write_text(json.dumps(qr.progress_doc(2, 1, running=1)))
            fake.set_status(sid, "RUNNING")
            time.sleep(0.3)
            table = pa.table(
                {
                    "symbol": ["AAA", "BBB"],
                    "model": ["ols", "ridge"],
                    "horizon": [1, 1],
                    "accuracy": [0.51, 0.55],
                }
            )
            pq.write_table(table, job_dir / "results" / "leaderboard.parquet")
            (job_dir / "progress.json").write_text(json.dumps(qr.progress_doc(2, 2)))
            fake.set_status(sid, "SUCCEEDED")
        time.sleep(0.02)


def _summary_plots_and_artifacts(capsys: pytest.CaptureFixture, job_dir: Path, job_id: str,
                                 tmp_path: Path) -> None:
    """`quantray summary|plots|artifacts`: the API's /summary, /plots and /artifacts had
    no CLI command."""
    summary = {"split": "test", "symbols": 2, "failed_units": [], "models": [
        {"model": "ridge", "horizon": 1, "n_symbols": 2, "accuracy": {"mean": 0.55},
         "baseline_accuracy": {"mean": 0.5}, "share_significant_1pct": 0.5}]}
    (job_dir / "results" / "summary.json").write_text(json.dumps(summary))
    (job_dir / "results" / "plots").mkdir(parents=True)
    (job_dir / "results" / "plots" / "comparison.png").write_bytes(b"\x89PNG fake")
    unit = job_dir / "units" / "AAA" / "ols" / "f0"
    unit.mkdir(parents=True)
    (unit / "metrics.json").write_text('{"accuracy": 0.51}')

    code, out, _ = _run(capsys, "summary", job_id)
    assert code == 0 and out.startswith("summary over 2 symbols, test split")
    assert out.splitlines()[2].split() == ["ridge", "1", "2", "0.550", "0.500", "-", "-", "-",
                                           "50%", "-"]
    code, out, _ = _run(capsys, "summary", job_id, "--json")
    assert json.loads(out) == summary
    code, out, _ = _run(capsys, "plots", job_id)
    assert (code, out) == (0, "comparison.png\n")
    code, out, _ = _run(capsys, "plots", job_id, "--out", str(tmp_path / "p"))
    assert code == 0 and (tmp_path / "p" / "comparison.png").read_bytes() == b"\x89PNG fake"
    code, out, _ = _run(capsys, "artifacts", job_id, "--prefix", "AAA/ols")
    assert code == 0 and out.splitlines()[1].split()[0] == "AAA/ols/f0/metrics.json"
    code, out, _ = _run(capsys, "artifacts", job_id, "--get", "AAA/ols/f0/metrics.json",
                        "--out", str(tmp_path / "m.json"))
    assert code == 0 and json.loads((tmp_path / "m.json").read_text()) == {"accuracy": 0.51}
    code, _, err = _run(capsys, "artifacts", job_id, "--get", "AAA/ols/f0/nope.json")
    assert code == 1 and "HTTP 404" in err and "nope.json" in err
    code, _, err = _run(capsys, "artifacts", job_id, "--out", str(tmp_path / "x"))
    assert code == 2 and "--out goes with --get PATH" in err
    # httpx normalises `..` away: `--get ../summary` printed the job's /summary, exit 0
    for path in ("../summary", f"../../{job_id}/artifacts/AAA/ols/f0/metrics.json"):
        code, out, err = _run(capsys, "artifacts", job_id, "--get", path)
        assert (code, out) == (1, "") and "contains '..': give a path inside the job" in err
    with pytest.raises(ApiClientError, match=r"plot name '\.\.' contains '\.\.'.*quantray plots"):
        ApiClient("http://127.0.0.1:9", None).plot(job_id, "..")  # refused before sending


def test_cli_against_the_api(
    tmp_path: Path,
    fake_ray: tuple[Any, str],
    qr: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    fake, ray_url = fake_ray
    monkeypatch.setenv("QUANTRAY_HOME", str(tmp_path))
    code, key, err = _run(capsys, "keys", "create", "--name", "alice")
    assert code == 0 and key.startswith("qr_") and "shown only this once" in err
    assert _run(capsys, "keys", "create", "--name", "alice")[0] == 1
    code, out, _ = _run(capsys, "keys", "list")
    assert "alice" in out and key.strip() not in out

    settings = qr.make_settings(tmp_path, ray_address=ray_url, max_running_jobs=1)
    server, api = qr.start_api(settings, {})
    monkeypatch.setenv("QUANTRAY_API", api.url)
    monkeypatch.setenv("QUANTRAY_API_KEY", key.strip())
    stop = threading.Event()
    player = threading.Thread(target=_play_ray, args=(fake, api.storage, stop, qr), daemon=True)
    player.start()
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC_YAML)
    try:
        code, out, err = _run(capsys, "submit", str(spec), "--wait", "--interval", "0.2")
        job_id = out.strip()
        assert code == 0, err
        assert job_id.startswith("qr-")
        assert "1/2 units" in err or "2/2 units" in err
        assert "succeeded" in err.splitlines()[-1]

        code, out, _ = _run(capsys, "status", job_id)
        assert code == 0 and "status:    succeeded" in out and f"ray:       {job_id}" in out
        code, out, _ = _run(capsys, "list")
        assert job_id in out and "cli-job" in out
        code, out, _ = _run(capsys, "results", job_id, "--model", "ridge")
        assert out.splitlines()[0].split() == ["SYMBOL", "MODEL", "HORIZON", "ACCURACY"]
        assert out.splitlines()[1].split() == ["BBB", "ridge", "1", "0.5500"]
        code, out, _ = _run(capsys, "results", job_id, "--format", "csv")
        assert out.splitlines()[0] == '"symbol","model","horizon","accuracy"'
        code, out, err = _run(capsys, "results", job_id, "--model", "Ridge")
        assert code == 0 and out.strip() == "(no rows)"
        assert "note: model 'Ridge' is not in this leaderboard (values are case-sensitive: " \
            "ridge?)" in err
        code, out, err = _run(capsys, "results", job_id, "--format", "csv", "--symbol", "ZZZ")
        assert "note: symbol 'ZZZ' is not in this leaderboard; it has: AAA, BBB" in err
        code, out, err = _run(capsys, "results", job_id, "--sort=-accuracy", "--limit", "1")
        assert code == 0 and out.splitlines()[1].split() == ["BBB", "ridge", "1", "0.5500"]
        assert len(out.splitlines()) == 2 and "rows 1-1 of 2 (next: --offset 1)" in err
        code, out, err = _run(capsys, "results", job_id, "--sort=accuracy", "--format", "csv",
                              "--limit", "1", "--offset", "1")
        assert out.splitlines()[1:] == ['"BBB","ridge",1,0.55'] and "next" not in err
        code, _, err = _run(capsys, "results", job_id, "--sort", "nope")
        assert code == 1 and "query.sort" in err
        code, out, _ = _run(capsys, "results", job_id, "--format", "json", "--symbol", "AAA")
        assert json.loads(out) == [
            {"symbol": "AAA", "model": "ols", "horizon": 1, "accuracy": 0.51}
        ]
        code, out, _ = _run(capsys, "logs", job_id)
        assert out == f"log of {job_id}\n"
        _summary_plots_and_artifacts(capsys, api.storage / "jobs" / job_id, job_id, tmp_path)
        code, out, _ = _run(capsys, "models")
        assert code == 0 and "ols" in out and "linear" in out

        code, out, _ = _run(capsys, "resume", job_id)
        assert code == 1  # succeeded jobs cannot be resumed
        code, out, err = _run(capsys, "status", "qr-0000000000000000")
        assert code == 1 and "HTTP 404" in err and "not found" in err
        bad = tmp_path / "bad.json"
        bad.write_text(
            json.dumps({"name": "x", "dataset": {"uri": "sample:sp500"}, "models": ["nope"]})
        )
        code, out, err = _run(capsys, "submit", str(bad))
        assert code == 1 and "models[0]" in err and "unknown model 'nope'" in err
        code, out, err = _run(capsys, "keys", "revoke", "alice")
        assert code == 0
        code, out, err = _run(capsys, "list")
        assert code == 1 and "HTTP 401" in err
    finally:
        stop.set()
        player.join(timeout=5)
        server.__exit__()


def test_an_api_command_whose_reader_closed_the_pipe_stops_quietly(api: Any) -> None:
    """`quantray models | head -1`: the API commands exited 0 on a closed pipe, the data
    commands 141 (128 + SIGPIPE, as a shell reports a command a pipe stopped): 141 both."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes
    proc = subprocess.run([sys.executable, "-m", "service.cli", "models", "--api", api.url,
                           "--api-key", api.keys["alice"]], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_cli_reports_an_unreachable_api(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("QUANTRAY_API", "http://127.0.0.1:9")
    code, _, err = _run(capsys, "list")
    assert code == 1 and "cannot reach the quantray API" in err and "quantray serve" in err


def test_serve_refuses_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv("QUANTRAY_HOME", str(tmp_path))
    monkeypatch.setenv("QUANTRAY_AUTH", "off")
    code, _, err = _run(capsys, "serve", "--host", "0.0.0.0", "--no-ray")
    assert code == 2 and "QUANTRAY_AUTH=off is only allowed when --host is a loopback " \
        "address, got '0.0.0.0'" in err  # the option that set it, not QUANTRAY_HOST
    monkeypatch.setenv("QUANTRAY_HOST", "0.0.0.0")
    code, _, err = _run(capsys, "serve", "--no-ray")
    assert code == 2 and "only allowed when QUANTRAY_HOST is a loopback" in err
    monkeypatch.delenv("QUANTRAY_HOST")
    monkeypatch.setenv("QUANTRAY_AUTH", "on")
    code, _, err = _run(capsys, "serve", "--no-ray")
    assert code == 2 and "QUANTRAY_MAX_RUNNING_JOBS=0" in err
    # refused at start, not only named by /readyz once serving
    monkeypatch.setenv("QUANTRAY_STORAGE_URI", "file://relative/dir")
    code, _, err = _run(capsys, "serve", "--no-ray")
    assert code == 2 and "QUANTRAY_STORAGE_URI='file://relative/dir': file URI " \
        "'file://relative/dir' names host 'relative': use file:///abs/path" in err, err
    monkeypatch.delenv("QUANTRAY_STORAGE_URI")
    # a token file that is not there: one line, not a traceback
    monkeypatch.setenv("QUANTRAY_RAY_ADDRESS", "http://127.0.0.1:9")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "nonexistent"))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("QUANTRAY_RAY_AUTH_TOKEN", raising=False)
    code, _, err = _run(capsys, "serve", "--port", "0")
    assert code == 2 and err.startswith(f"quantray serve: RAY_AUTH_TOKEN_PATH="
                                        f"'{tmp_path / 'nonexistent'}' does not exist"), err


def test_cli_api_url_without_scheme_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("QUANTRAY_API", "127.0.0.1:9")
    code, _, err = _run(capsys, "list")
    assert code == 1 and "http://127.0.0.1:9" in err and "scheme" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("logs", "qr-x", "-f", "--interval", "-1"), "--interval: -1 s is out of range"),
        (("submit", "spec.yaml", "--wait", "--interval", "0"), "--interval: 0 s is out of"),
        (("logs", "qr-x", "--interval", "nan"), "--interval: nan s is out of range"),
        (("logs", "qr-x", "--interval", "61"), "poll every 0.2 to 60 seconds"),
        (("list", "--page-size", "0"), "--page-size: 0 is below 1"),
        (("list", "--page", "0"), "--page: 0 is below 1"),
        (("list", "--status", "done"), "--status: invalid choice: 'done'"),
    ],
)
def test_cli_refuses_out_of_range_options(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_cli_api_and_key_messages_list_filters_and_models_presets(
    api: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """No key: says which setting to set. --api/--api-key before the command work, an API
    URL given with /v1 works, --status repeats, and `models` shows the presets."""
    monkeypatch.delenv("QUANTRAY_API_KEY", raising=False)
    monkeypatch.setenv("QUANTRAY_API", api.url)
    code, _, err = _run(capsys, "list")
    assert code == 1 and "set QUANTRAY_API_KEY or pass --api-key" in err and "Bearer" not in err
    key = api.keys["alice"]
    with api.client() as c:
        ids = [c.post("/v1/jobs", json={**SPEC_JSON, "name": f"j{i}"}).json()["id"]
               for i in range(3)]  # fmt: skip
        c.post(f"/v1/jobs/{ids[0]}/cancel")
    monkeypatch.setenv("QUANTRAY_API", "http://127.0.0.1:9")  # the options must win
    code, out, err = _run(capsys, "--api", api.url, "--api-key", key, "list", "--json")
    assert code == 0, err
    assert {j["id"] for j in json.loads(out)["items"]} == set(ids)
    monkeypatch.setenv("QUANTRAY_API", api.url + "/v1/")
    monkeypatch.setenv("QUANTRAY_API_KEY", key)
    code, out, err = _run(capsys, "list", "--status", "cancelled", "--status", "queued",
                          "--json", "--page-size", "2")  # fmt: skip
    assert code == 0, err
    page = json.loads(out)
    assert page["total"] == 3 and len(page["items"]) == 2
    code, out, err = _run(capsys, "list", "--status", "cancelled", "--json")
    assert [j["id"] for j in json.loads(out)["items"]] == [ids[0]]

    code, out, err = _run(capsys, "models")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[-1] == "PRESETS"
    lstm = next(r for r in rows if r.startswith("lstm "))
    assert lstm.endswith("fast, balanced, quality"), lstm
    code, out, err = _run(capsys, "models", "lstm")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["PRESET", "EPOCHS", "PATIENCE", "BATCH_SIZE", "LR"]
    assert [r.split()[:2] for r in rows] == [["fast", "10"], ["balanced", "30"],
                                             ["quality", "60"]]  # fmt: skip
    assert "hidden_size=32" in rows[0]
    code, _, err = _run(capsys, "models", "lstmm")
    assert code == 1 and "no model 'lstmm'" in err


SPEC_JSON: dict[str, Any] = {"name": "cli-job", "dataset": {"uri": "sample:sp500", "symbols": 2},
                             "models": ["ols"]}  # fmt: skip


def _api_for_the_cli(tmp_path: Path, fake_ray: tuple[Any, str], qr: Any,
                     monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, Any, Path]:
    """(fake Ray, settings, the started API server, a spec file): an API alice's CLI talks
    to (QUANTRAY_API, QUANTRAY_API_KEY set); the caller stops the server."""
    fake, ray_url = fake_ray
    settings = qr.make_settings(tmp_path, ray_address=ray_url, max_running_jobs=1)
    server, api = qr.start_api(settings, {"alice": False})
    monkeypatch.setenv("QUANTRAY_API", api.url)
    monkeypatch.setenv("QUANTRAY_API_KEY", api.keys["alice"])
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC_YAML)
    return fake, settings, server, spec


def test_submit_wait_rides_out_an_api_restart(
    tmp_path: Path,
    fake_ray: tuple[Any, str],
    qr: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """The API stops while `submit --wait` follows a running job and comes back on the same
    port: the CLI says it is retrying, then reports the job's end (exit 0)."""
    fake, settings, server, spec = _api_for_the_cli(tmp_path, fake_ray, qr, monkeypatch)
    result: dict[str, int] = {}
    cli = threading.Thread(target=lambda: result.update(code=main(
        ["submit", str(spec), "--wait", "--interval", "0.2"])), daemon=True)  # fmt: skip
    cli.start()
    try:
        deadline = time.monotonic() + 20
        while not fake.jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        (sid,) = fake.jobs
        fake.set_status(sid, "RUNNING")
        time.sleep(0.5)
        server.__exit__()  # the API goes away mid-wait
        time.sleep(1.5)
        server = qr.LiveServer(create_app(settings), port=server.port)
        server.__enter__()
        fake.set_status(sid, "SUCCEEDED")
        cli.join(timeout=30)
    finally:
        server.__exit__()
    out, err = capsys.readouterr()
    assert not cli.is_alive() and result.get("code") == 0, err
    assert out.strip() == sid
    assert "cannot reach the quantray API" in err and "retrying for up to 60 s" in err
    assert err.rstrip().endswith("succeeded")


def test_ctrl_c_while_following_says_the_job_goes_on(
    tmp_path: Path,
    fake_ray: tuple[Any, str],
    qr: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Ctrl-C in `submit --wait` and `logs -f`: one line on how to follow or stop the job,
    exit status 130, no traceback."""
    import types

    from service import cli_jobs

    fake, settings, server, spec = _api_for_the_cli(tmp_path, fake_ray, qr, monkeypatch)

    def ctrl_c(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_jobs, "time", types.SimpleNamespace(sleep=ctrl_c,
                                                                monotonic=time.monotonic))
    try:
        code, out, err = _run(capsys, "submit", str(spec), "--wait")
        job_id = out.strip()
        assert code == 130, err
        assert err.splitlines()[-1] == (f"job {job_id} keeps running; `quantray status "
                                        f"{job_id}` to follow it, `quantray cancel {job_id}` "
                                        "to stop it")  # fmt: skip
        assert "Traceback" not in err
        deadline = time.monotonic() + 20
        while job_id not in fake.jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        fake.set_status(job_id, "RUNNING")
        code, out, err = _run(capsys, "logs", job_id, "-f")
        assert code == 130 and out == f"log of {job_id}\n", err
        assert err.splitlines()[-1].startswith(f"job {job_id} keeps running;")
    finally:
        server.__exit__()


def test_serve_marks_the_jobs_of_its_own_stopped_ray_head_interrupted(
    tmp_path: Path, fake_ray: tuple[Any, str], qr: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """`quantray serve` that started its own Ray head stops it on exit (SIGTERM): the jobs
    that ran on it are `interrupted` (resumable) at once, not `running` until the next
    start; a queued job stays queued. (The head is the fake Ray; uvicorn.run serves the app
    over HTTP until the job runs, then returns as after a SIGTERM.)"""
    import uvicorn

    from service import local_ray

    fake, ray_url = fake_ray
    stopped: list[bool] = []

    class Head:
        dashboard_url, temp_dir = ray_url, tmp_path / "ray"

        def stop(self) -> None:
            stopped.append(True)
            fake.forget_all()

    answers: dict[str, Any] = {}

    def serve_until_running(app: Any, **_: Any) -> None:
        with qr.LiveServer(app) as server:
            with httpx.Client(base_url=server.url) as client:
                ids = [client.post("/v1/jobs", json={**SPEC_JSON, "name": f"j{i}"}).json()["id"]
                       for i in range(2)]  # fmt: skip
                deadline = time.monotonic() + 20
                while client.get(f"/v1/jobs/{ids[0]}").json()["status"] != "running":
                    assert time.monotonic() < deadline, "the job never ran"
                    time.sleep(0.05)
                answers["ids"] = ids

    monkeypatch.setattr(local_ray.LocalRayHead, "start", classmethod(lambda cls, **_: Head()))
    monkeypatch.setattr(uvicorn, "run", serve_until_running)
    for name, value in {"QUANTRAY_HOME": tmp_path, "QUANTRAY_AUTH": "off",
                        "QUANTRAY_MAX_RUNNING_JOBS": 1, "QUANTRAY_POLL_INTERVAL_S": 0.05}.items():
        monkeypatch.setenv(name, str(value))  # fmt: skip
    monkeypatch.delenv("QUANTRAY_RAY_ADDRESS", raising=False)
    code, _, err = _run(capsys, "serve")
    assert code == 0 and stopped == [True], err

    settings = qr.make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'quantray.db'}")
    server, api = qr.start_api(settings, {"alice": True})
    try:
        with api.client() as c:
            first, second = (c.get(f"/v1/jobs/{i}").json() for i in answers["ids"])
            assert first["status"] == "interrupted", first
            assert "stopped when the server exited" in first["message"], first
            assert second["status"] == "queued", second
            assert c.post(f"/v1/jobs/{first['id']}/resume").status_code == 200
    finally:
        server.__exit__()


def test_cli_error_keeps_the_message_besides_the_fields(
    tmp_path: Path, qr: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """An error whose `errors` do not repeat its message (`logs --attempt` past the job's
    attempts) shows the message as well as each field; a spec's errors, which the message
    joins, are shown once."""
    server, api = qr.start_api(qr.make_settings(tmp_path), {"alice": False})
    monkeypatch.setenv("QUANTRAY_API", api.url)
    monkeypatch.setenv("QUANTRAY_API_KEY", api.keys["alice"])
    try:
        with api.client() as c:
            job_id = c.post("/v1/jobs", json=SPEC_JSON).json()["id"]
        code, _, err = _run(capsys, "logs", job_id, "--attempt", "3")
        assert code == 1 and f"job {job_id} has attempts 0..0" in err, err
        assert "query.attempt: use 0 to 0" in err, err
        spec = tmp_path / "bad.yaml"
        spec.write_text(SPEC_YAML.replace("symbols: 2", "symbols: 0"))
        code, _, err = _run(capsys, "submit", str(spec))
        assert code == 1 and err.count("out of range") == 1, err
    finally:
        server.__exit__()


def test_logs_follow_waits_for_a_queued_job_to_start(
    tmp_path: Path, fake_ray: tuple[Any, str], qr: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """`logs -f` of a job still queued (its slot is taken) waits for it to start, then
    follows its log to the end (exit 0), instead of failing at once with a 409."""
    fake, _, server, _ = _api_for_the_cli(tmp_path, fake_ray, qr, monkeypatch)
    result: dict[str, int] = {}
    try:
        key = os.environ["QUANTRAY_API_KEY"]
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as c:
            first, second = (c.post("/v1/jobs", json={**SPEC_JSON, "name": f"j{i}"}).json()["id"]
                             for i in range(2))  # fmt: skip
            deadline = time.monotonic() + 20
            while first not in fake.jobs:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert c.get(f"/v1/jobs/{second}").json()["status"] == "queued"
        cli = threading.Thread(target=lambda: result.update(code=main(
            ["logs", second, "-f", "--interval", "0.2"])), daemon=True)  # fmt: skip
        cli.start()
        time.sleep(1.0)
        assert cli.is_alive() and "code" not in result  # waiting, not failed
        fake.set_status(first, "SUCCEEDED")  # frees the slot: the second job starts
        deadline = time.monotonic() + 20
        while second not in fake.jobs:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        fake.set_status(second, "SUCCEEDED")
        cli.join(timeout=20)
    finally:
        server.__exit__()
    out, err = capsys.readouterr()
    assert not cli.is_alive() and result.get("code") == 0, err
    assert out == f"log of {second}\n", (out, err)
    assert f"job {second} is queued: waiting for it to start" in err


def test_serve_on_a_taken_port_fails_before_starting_a_ray_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A port another process listens on is named at once (exit 1): no Ray head is started
    (a minute of waiting), so no queued job is submitted to a head that is torn down."""
    import socket

    from service import local_ray

    started: list[bool] = []
    monkeypatch.setattr(local_ray.LocalRayHead, "start",
                        classmethod(lambda cls, **_: started.append(True)))  # fmt: skip
    for name, value in {"QUANTRAY_HOME": tmp_path, "QUANTRAY_AUTH": "off"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("QUANTRAY_RAY_ADDRESS", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = _run(capsys, "serve", "--port", str(port))
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in err, err
    assert started == []
