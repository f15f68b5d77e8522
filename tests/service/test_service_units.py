"""Pure pieces: settings from the environment, Ray token lookup, safe paths, progress.json,
the CLI's progress bar, and the local Ray head's process selection."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.cli_format import duration, progress_line, table, wait_line
from service.job_files import UnsafePath, parse_progress, safe_relpath
from service.local_ray import LocalRayHead
from service.ray_client import RayAuthError, resolve_ray_token
from service.settings import Settings, SettingsError


def test_settings_defaults_live_under_home(tmp_path: Path) -> None:
    s = Settings.from_env({}, cwd=tmp_path)
    assert s.home == tmp_path / ".quantray"
    assert s.storage_uri == f"file://{tmp_path / '.quantray' / 'storage'}"
    assert s.database_url == f"sqlite:///{tmp_path / '.quantray' / 'quantray.db'}"
    assert (s.auth, s.host, s.port, s.max_running_jobs) == (True, "127.0.0.1", 8000, 2)
    env = {
        "QUANTRAY_DATABASE_URL": "postgresql://u@h/db",
        "QUANTRAY_DATA_ROOTS": "/a/, s3://b/p",
        "QUANTRAY_RAY_ADDRESS": "http://127.0.0.1:8265/",
        "QUANTRAY_MAX_RUNNING_JOBS": "0",
    }
    s = Settings.from_env(env, cwd=tmp_path)
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert s.data_roots == ("file:///a", "s3://b/p")
    assert s.ray_address == "http://127.0.0.1:8265"


@pytest.mark.parametrize(
    ("env", "text"),
    [
        ({"QUANTRAY_MAX_RUNNING_JOBS": "-1"}, "QUANTRAY_MAX_RUNNING_JOBS"),
        ({"QUANTRAY_PORT": "http"}, "QUANTRAY_PORT"),
        ({"QUANTRAY_AUTH": "maybe"}, "QUANTRAY_AUTH"),
        ({"QUANTRAY_AUTH": "off", "QUANTRAY_HOST": "0.0.0.0"}, "loopback"),
        ({"QUANTRAY_RAY_ADDRESS": "127.0.0.1:6379"}, "dashboard URL"),
        ({"QUANTRAY_STORAGE_URI": "ftp://x/y"}, "QUANTRAY_STORAGE_URI"),
        ({"QUANTRAY_STORAGE_URI": "file://relative/dir"},
         "QUANTRAY_STORAGE_URI='file://relative/dir': .* names host 'relative': use file:///"),
        ({"QUANTRAY_STORAGE_URI": "file:relative"}, "must hold an absolute path"),
        ({"QUANTRAY_DATA_ROOTS": "file://relative/dir"},
         "QUANTRAY_DATA_ROOTS entry 'file://relative/dir': .* names host 'relative'"),
        ({"QUANTRAY_DATABASE_URL": "mysql://x"}, "QUANTRAY_DATABASE_URL"),
        ({"QUANTRAY_DATA_ROOTS": "relative/dir"}, "QUANTRAY_DATA_ROOTS"),
        ({"QUANTRAY_RAY_RUNTIME_ENV": "[1]"}, "JSON object"),
        ({"QUANTRAY_PAGE_SIZE": "1000"}, "QUANTRAY_PAGE_SIZE"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(
    tmp_path: Path, env: dict, text: str
) -> None:
    with pytest.raises(SettingsError, match=text):
        Settings.from_env(env, cwd=tmp_path)


def test_auth_off_allowed_on_loopback_and_ray_required_to_dispatch(tmp_path: Path) -> None:
    assert not Settings.from_env(
        {"QUANTRAY_AUTH": "off", "QUANTRAY_HOST": "::1"}, cwd=tmp_path
    ).auth
    with pytest.raises(SettingsError, match="QUANTRAY_RAY_ADDRESS is empty"):
        Settings.from_env({}, cwd=tmp_path).require_ray()
    Settings.from_env({"QUANTRAY_MAX_RUNNING_JOBS": "0"}, cwd=tmp_path).require_ray()


def test_ray_token_lookup_order(tmp_path: Path) -> None:
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-file\n")
    other = tmp_path / "tok"
    other.write_text("from-path")
    assert resolve_ray_token("explicit", {"RAY_AUTH_TOKEN": "env"}, tmp_path) == "explicit"
    assert resolve_ray_token(None, {"RAY_AUTH_TOKEN": "env"}, tmp_path) == "env"
    assert resolve_ray_token(None, {"RAY_AUTH_TOKEN_PATH": str(other)}, tmp_path) == "from-path"
    assert resolve_ray_token(None, {}, tmp_path) == "from-file"
    assert resolve_ray_token(None, {}, tmp_path / "nohome") is None
    with pytest.raises(RayAuthError, match="RAY_AUTH_TOKEN_PATH"):
        resolve_ray_token(None, {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")}, tmp_path)


@pytest.mark.parametrize("path", ["AAA/ols/model.pt", "BRK.B/lstm/metrics.json", "x"])
def test_safe_relpath_accepts_plain_paths(path: str) -> None:
    assert safe_relpath(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../../b",
        "a/./b",
        "a//b",
        "a\\b",
        "%2e%2e/x",
        ".ssh/id_rsa",
        "a/\x00b",
        "~/x",
    ],
)
def test_safe_relpath_rejects_escapes(path: str) -> None:
    with pytest.raises(UnsafePath):
        safe_relpath(path)


def test_progress_parsing(qr: Any) -> None:
    p = parse_progress(qr.progress_doc(10, 3, (("A/ols", "x"),), running=2))
    assert (p.units_total, p.units_done, p.units_failed, p.units_running) == (10, 3, 1, 2)
    assert p.fraction == 0.4 and p.eta_seconds == 15.0 and p.phase == "training"
    assert p.errors == [{"unit_id": "A/ols", "error": "x"}]
    with pytest.raises(ValueError, match="units.done"):
        parse_progress({"units": {"done": "four"}})
    with pytest.raises(ValueError, match="failures"):
        parse_progress({"failures": "many"})
    with pytest.raises(ValueError, match="object"):
        parse_progress([1, 2])


def test_status_shows_that_the_progress_shown_is_stale() -> None:
    """While the storage does not answer the API shows the last progress read, with a
    `progress_error` saying so; `quantray status` showed the old progress (and its ETA)
    alone."""
    from service.cli_format import job_summary

    job = {"id": "qr-0123456789abcdef", "name": "j", "status": "running", "owner": "a",
           "attempt": 0, "created_at": "t", "ray": {},
           "progress": {"units_total": 15, "units_done": 6, "eta_seconds": 63},
           "progress_error": "the job storage (s3://b/p) does not answer since 21:05:17"}
    lines = job_summary(job).splitlines()
    assert any(line.startswith("progress:  ") and "6/15 units" in line for line in lines)
    assert "stale:     the job storage (s3://b/p) does not answer since 21:05:17" in lines
    job["progress"] = None
    assert "progress:  unreadable: the job storage" in job_summary(job)


def test_progress_bar_and_table() -> None:
    job = {
        "status": "running",
        "progress": {"units_total": 40, "units_done": 12, "units_failed": 1, "eta_seconds": 65},
    }
    line = progress_line(job, width=10)
    assert line.startswith("[###.......] 12/40 units")
    assert "30%" in line and "ETA 1m05s" in line and "1 failed" in line and line.endswith("running")
    assert "waiting for progress" in progress_line({"status": "queued", "progress": None})
    job["progress"].update(phase="tuning", message="lstm: 12 of 20 trials ended,\n" + "x" * 80)
    line = wait_line(job, max_len=104)  # a 105-column terminal: the message is cut
    assert len(line) == 104 and line.endswith("running, tuning: lstm: 12 of...")
    assert wait_line(job, max_len=300).endswith("running, tuning: lstm: 12 of 20 trials ended, "
                                                + "x" * 80)  # on one line  # fmt: skip
    assert wait_line(job).endswith("1 failed  running")  # 80 columns: no room, left out
    job.update(status="failed", progress={**job["progress"], "phase": "failed", "message": "m"})
    assert wait_line(job, 120).endswith("failed, m")  # no phase that repeats the status
    assert duration(3725) == "1h02m" and duration(None) == "--"
    text = table([{"a": 1.23456, "b": None}, {"a": "long value", "b": "x"}], ["a", "b"])
    assert text.splitlines() == ["A           B", "1.2346      -", "long value  x"]


def test_local_ray_head_selects_only_its_own_processes(tmp_path: Path) -> None:
    """`stop` must never touch another Ray: it signals processes naming its temp dir (and
    their children) only. A decoy process stands in for a foreign Ray."""
    mine = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"--temp-dir={tmp_path}"]
    )
    decoy = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--temp-dir=/tmp/someone-elses-ray"]
    )
    try:
        head = LocalRayHead(temp_dir=tmp_path, gcs_port=1, dashboard_port=2)
        assert head.pids() == [mine.pid]
        head.stop(grace_s=5)
        assert mine.wait(timeout=5) is not None
        assert decoy.poll() is None and not tmp_path.exists()
    finally:
        for proc in (mine, decoy):
            if proc.poll() is None:
                os.kill(proc.pid, 9)
                proc.wait()


def test_override_checker_child_exits_when_the_api_process_is_killed() -> None:
    """The checker's child imports the registry (torch): it must not outlive a SIGKILLed
    API process as an orphan."""
    import signal
    import sys
    import time

    code = (
        "import json, multiprocessing, time\n"
        "from service.spec_checker import override_errors\n"
        "spec = {'name': 'x', 'dataset': {'uri': 'sample:sp500'}, 'models': ['lstm'],\n"
        "        'overrides': {'lstm': {'hidden_size': -5}}}\n"
        "errors = override_errors(spec)\n"
        "print(json.dumps([errors, [p.pid for p in multiprocessing.active_children()]]),\n"
        "      flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        errors, children = json.loads(proc.stdout.readline())
        assert errors == [["overrides.lstm.hidden_size",
                           "lstm.hidden_size=-5: use a positive integer such as 64"]]
        assert children
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        alive = children
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [p for p in children if _running(p)]
        assert not alive, f"checker child(ren) {alive} outlived the killed API process"
    finally:
        if proc.poll() is None:
            proc.kill()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_dataset_probe_reads_a_file_once_until_it_changes(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Symbols and per-symbol times are cached per (uri, size, mtime): polling clients
    re-submitting the same dataset do not re-read it, and a rewritten file is read again."""
    import pandas as pd

    from service import dataset_probe

    reads: list[str] = []
    for name in ("_read_symbol_column", "_read_symbol_times"):
        real = getattr(dataset_probe, name)
        monkeypatch.setattr(dataset_probe, name,
                            lambda *a, _r=real, _n=name: reads.append(_n) or _r(*a))
    path = tmp_path / "bars.parquet"
    days = pd.bdate_range("2020-01-01", periods=5)
    pd.DataFrame({"symbol": ["A"] * 5, "date": days}).to_parquet(path)
    probe = dataset_probe.DatasetProbe()
    for _ in range(2):
        assert probe.symbols(str(path)) == {"A"}
        assert probe.rows_in_window(str(path), "date", "2020-01-02", None) == {"A": 4}
    assert reads == ["_read_symbol_column", "_read_symbol_times"]
    pd.DataFrame({"symbol": ["A", "B"], "date": days[:2]}).to_parquet(path)
    os.utime(path, ns=(10**18, 10**18))  # a new mtime even within the clock's resolution
    assert probe.symbols(str(path)) == {"A", "B"}
    assert probe.rows_in_window(str(path), "date", None, "2020-01-01") == {"A": 1, "B": 0}
    assert len(reads) == 4


def test_dataset_probe_reads_a_directory_again_when_a_file_in_it_is_rewritten(
    tmp_path: Path,
) -> None:
    """A Parquet directory fixed in place (a file rewritten, the directory's own mtime
    unchanged, as on S3 where a prefix has none) is read again: the stale symbols were
    served before."""
    import pandas as pd

    from service import dataset_probe

    days = pd.bdate_range("2020-01-01", periods=5)
    part = tmp_path / "part-0.parquet"
    pd.DataFrame({"symbol": ["A"] * 5, "date": days}).to_parquet(part)
    probe = dataset_probe.DatasetProbe()
    assert probe.symbols(str(tmp_path)) == {"A"}
    folder_times = os.stat(tmp_path).st_atime_ns, os.stat(tmp_path).st_mtime_ns
    pd.DataFrame({"symbol": ["A", "B"], "date": days[:2]}).to_parquet(part)
    os.utime(part, ns=(10**18, 10**18))  # a new mtime even within the clock's resolution
    os.utime(tmp_path, ns=folder_times)  # the directory looks untouched
    assert probe.symbols(str(tmp_path)) == {"A", "B"}


def test_dataset_probe_reads_hive_partitions_as_the_loader_does(tmp_path: Path) -> None:
    """A directory partitioned by `symbol=` (numeric-looking tickers too) passes the API's
    submit-time probe with the symbols and rows the job's loader will read."""
    import pandas as pd

    from data.loading import list_symbols
    from service import dataset_probe

    days = pd.bdate_range("2020-01-01", periods=5)
    for symbol in ("0700", "9988"):
        folder = tmp_path / f"symbol={symbol}"
        folder.mkdir()
        pd.DataFrame({"date": days, "close": 1.0}).to_parquet(folder / "part-0.parquet")
    probe = dataset_probe.DatasetProbe()
    assert probe.symbols(str(tmp_path)) == {"0700", "9988"} == set(list_symbols(str(tmp_path)))
    assert probe.rows_in_window(str(tmp_path), "date", "2020-01-02", None) == {
        "0700": 4, "9988": 4}


def test_dataset_probe_reads_a_frame_saved_with_its_date_index(tmp_path: Path) -> None:
    """`df.set_index('date').to_parquet(...)` stores the index as a column; the probe's
    `to_pandas` turned it back into the index (KeyError: 'date')."""
    import pandas as pd

    from service import dataset_probe

    days = pd.bdate_range("2020-01-01", periods=5)
    path = tmp_path / "indexed.parquet"
    pd.DataFrame({"symbol": ["A"] * 5, "date": days}).set_index("date").to_parquet(path)
    probe = dataset_probe.DatasetProbe()
    assert probe.symbols(str(path)) == {"A"}
    assert probe.rows_in_window(str(path), "date", "2020-01-02", None) == {"A": 4}


@pytest.mark.parametrize("stray", ["README.md", "0notes.txt"])
def test_dataset_probe_names_a_file_that_is_not_parquet(tmp_path: Path, stray: str) -> None:
    """A README beside a directory's Parquet files is named at submit, with the fix."""
    import pandas as pd

    from service import dataset_probe

    days = pd.bdate_range("2020-01-01", periods=5)
    for symbol in ("A", "B"):
        pd.DataFrame({"symbol": [symbol] * 5, "date": days}).to_parquet(
            tmp_path / f"{symbol}.parquet")
    (tmp_path / stray).write_text("hello\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / stray))} is not Parquet: "
                       "move it out of the directory"):
        dataset_probe.DatasetProbe().symbols(str(tmp_path))


@pytest.mark.parametrize(
    ("accept", "csv"),
    [("text/csv", True), ("application/json", False), ("", False), ("*/*", False),
     ("text/csv;q=0.9, application/json", False), ("application/json;q=0.5, text/csv", True),
     ("text/csv;q=0", False), ("TEXT/CSV", True), ("text/csv, application/json", False),
     ("text/*", True), ("text/*, application/json", False), ("text/*, */*;q=0.1", True),
     ("text/*;q=0.5, */*", False), ("application/*", False),
     ("text/*;q=0.9, application/*;q=0.5", True)],
)  # fmt: skip
def test_results_format_follows_the_accept_weights(accept: str, csv: bool) -> None:
    from service.routes_results import wants_csv

    assert wants_csv(accept) is csv


def test_dataset_probe_refuses_numeric_csv_dates_as_the_loader_does(tmp_path: Path) -> None:
    """A CSV date column of numbers (20130208) is refused at submit with the loader's
    message, instead of passing the probe (which reads CSV as text) and failing every
    unit on the cluster."""
    import pandas as pd

    from data.validation import DataValidationError
    from service import dataset_probe

    path = tmp_path / "bars.csv"
    pd.DataFrame({"symbol": ["A"] * 3, "date": [20130208, 20130211, 20130212]}).to_csv(
        path, index=False)
    with pytest.raises(DataValidationError, match="holds numbers"):
        dataset_probe.DatasetProbe().rows_in_window(str(path), "date", None, None)


def test_status_progress_serves_the_last_read_while_the_storage_is_down() -> None:
    """Unit view of the fast status read: a read that fails marks the storage down; until
    the retry time no read is tried and the last progress comes back with the error; once a
    read succeeds again the error is gone."""
    import threading
    import time

    from service.job_files import parse_progress
    from service.status_progress import StatusProgress

    class Files:
        storage_uri = "s3://bkt/store?endpoint_override=http://127.0.0.1:9"

        def __init__(self) -> None:
            self.calls, self.mode = 0, "ok"
            self.release, self.ended = threading.Event(), threading.Event()

        def read_progress(self, job_id: str, attempt: int) -> Any:
            self.calls += 1
            if self.mode == "down":
                raise OSError("curlCode: 7, Could not connect to server")
            if self.mode == "hang":
                self.release.wait(5)
                self.ended.set()
                raise OSError("request timed out")
            return parse_progress({"phase": "training", "units": {"total": 4, "done": 2}})

    now = [1000.0]
    files = Files()
    status = StatusProgress(files, budget_s=0.2, retry_after_s=5, clock=lambda: now[0])  # type: ignore[arg-type]
    try:
        progress, error = status.read("qr-1", 0)
        assert progress is not None and progress.units_done == 2 and error is None
        files.mode, now[0] = "down", 1010.0
        progress, error = status.read("qr-1", 0)
        assert progress is not None and progress.units_done == 2, progress
        assert error is not None and "does not answer since" in error and "10 s ago" in error
        assert "Could not connect" in error
        calls = files.calls
        assert status.read("qr-2", 0) == (None, error.split(";")[0] + "; no progress of this "
                                          "job was read before it went down")  # fmt: skip
        assert files.calls == calls  # marked down: no read tried before the retry time
        files.mode, now[0] = "hang", 1016.0
        progress, error = status.read("qr-1", 0)  # runs out of its budget
        assert progress is not None and "no answer within 0.2 s" in (error or "")
        files.release.set()
        assert files.ended.wait(5)
        time.sleep(0.05)  # its done-callback marks the storage down again, at t=1016
        files.mode, now[0] = "ok", 1030.0
        progress, error = status.read("qr-1", 0)
        assert error is None and progress is not None
    finally:
        status.close()


def test_dataset_probe_reads_zoned_daily_dates_per_symbol_as_the_loader(tmp_path: Path) -> None:
    """A zoned file with a daily symbol stamped at local midnight (Asia/Tokyo) beside an
    hourly one: the loader keeps the daily symbol's local dates (decided per symbol), and
    the submit-time probe must count rows in a job's window on the same dates; it decided
    for the whole column, so the daily bars sat at 15:00 the day before."""
    import pandas as pd

    from data.loading import load_bars
    from service import dataset_probe

    days = pd.bdate_range("2020-01-06", periods=5).tz_localize("Asia/Tokyo")
    hours = pd.date_range("2020-01-06 09:00", periods=5, freq="h", tz="Asia/Tokyo")
    frame = pd.DataFrame({"symbol": ["DAY"] * 5 + ["HOUR"] * 5, "date": days.append(hours),
                          "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5,
                          "volume": 1000.0})
    path = tmp_path / "bars.parquet"
    frame.to_parquet(path)
    loaded = load_bars(str(path))
    assert loaded.loc[loaded["symbol"] == "DAY", "date"].dt.hour.eq(0).all()
    rows = dataset_probe.DatasetProbe().rows_in_window(str(path), "date", "2020-01-07", None)
    assert rows == {"DAY": 4, "HOUR": 0}  # HOUR: 00:00-04:00 UTC on Jan 6


def test_dataset_probe_is_not_refused_by_another_symbols_live_bar(tmp_path: Path) -> None:
    """A Tokyo CSV whose symbol LIVE has a 14:35 bar among its midnights: a job on GOOD
    alone loads it (the loader judges the symbols asked for), but the submit-time probe,
    which reads every symbol, refused every job on the file with LIVE's error. The probe
    judges none: a job asking for LIVE fails that symbol alone, with its reason."""
    import pandas as pd

    from service import dataset_probe

    days = pd.bdate_range("2018-02-26", periods=10).tz_localize("Asia/Tokyo")
    live = days[-1] + pd.Timedelta(hours=14, minutes=35)
    times = days.append(days[:-1]).append(pd.DatetimeIndex([live]))
    frame = pd.DataFrame({"symbol": ["GOOD"] * 10 + ["LIVE"] * 10,
                          "date": [t.isoformat() for t in times], "open": 10.0,
                          "high": 11.0, "low": 9.0, "close": 10.5, "volume": 1000.0})
    path = tmp_path / "bars.csv"
    frame.to_csv(path, index=False)
    rows = dataset_probe.DatasetProbe().rows_in_window(str(path), "date", "2018-03-01", None)
    assert rows["GOOD"] == 7  # Mar 1, 2, 5-9: its local dates
