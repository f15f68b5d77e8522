"""JobStorage: the layout, atomic writes, retry on transient errors, clear permanent errors,
on a local directory and on S3 (a moto server on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from ray_jobs.storage import (
    JobStorage,
    RetryPolicy,
    StorageError,
    StorageNotFoundError,
    is_transient,
)
from service.local_ray import free_port

FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.04, jitter=0.0)


class FlakyHandler(pafs.FileSystemHandler):
    """A local filesystem whose operations raise queued errors before they work.

    `failures[op]` is a list of exceptions; each call of `op` pops and raises the first one
    until the list is empty, then delegates to the real filesystem.
    """

    def __init__(self, failures: dict[str, list[BaseException]] | None = None) -> None:
        self.fs = pafs.LocalFileSystem()
        self.failures = failures or {}
        self.calls: dict[str, int] = {}

    def _maybe_fail(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        queue = self.failures.get(op)
        if queue:
            raise queue.pop(0)

    def get_type_name(self) -> str:
        return "flaky"

    def normalize_path(self, path: str) -> str:
        return path

    def equals(self, other: object) -> bool:
        return self is other

    def get_file_info(self, paths):
        self._maybe_fail("get_file_info")
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        self._maybe_fail("get_file_info")
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refusing to delete the root")

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self._maybe_fail("move")
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        self._maybe_fail("open_input_stream")
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        self._maybe_fail("open_input_stream")
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        self._maybe_fail("open_output_stream")
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path, metadata=metadata)


def flaky_storage(tmp_path: Path, failures: dict, sleeps: list[float]) -> JobStorage:
    handler = FlakyHandler(failures)
    store = JobStorage(
        f"file://{tmp_path}", "job-403", retry=FAST, filesystem=pafs.PyFileSystem(handler),
        sleep=sleeps.append,
    )  # fmt: skip
    store.handler = handler  # type: ignore[attr-defined]  # for the assertions
    return store


# ---- local ------------------------------------------------------------------------------
def test_local_layout_roundtrip(tmp_path: Path) -> None:
    store = JobStorage(str(tmp_path), "job1")
    store.write_spec({"name": "x"})
    store.write_progress({"phase": "training"})
    store.write_json("units/AAPL/lstm/metrics.json", {"acc": 0.5})
    store.write_bytes("results/leaderboard.csv", b"a,b\n1,2\n")
    table = pa.table({"symbol": ["AAPL", "MSFT"], "acc": [0.5, 0.6]})
    store.write_table("results/leaderboard.parquet", table)

    root = tmp_path / "jobs" / "job1"
    assert json.loads((root / "spec.json").read_text()) == {"name": "x"}
    assert store.read_progress() == {"phase": "training"}
    assert store.read_table("results/leaderboard.parquet").equals(table)
    assert store.list_dir("results") == ["leaderboard.csv", "leaderboard.parquet"]
    assert store.list_files("units") == ["AAPL/lstm/metrics.json"]
    assert store.list_dir("nothing", missing_ok=True) == []
    assert store.exists("spec.json") and not store.exists("nope.json")
    assert store.uri == f"{tmp_path}/jobs/job1"
    assert store.ray_storage().storage_path == str(root / "ray")
    assert store.ray_storage().storage_filesystem is None
    # Workers get the storage by pickle (Ray task / actor arguments).
    assert pickle.loads(pickle.dumps(store)).read_progress() == {"phase": "training"}


def test_local_dir_upload_download_and_unit_status(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.pt").write_bytes(b"weights")
    (src / "sub" / "meta.json").write_text("{}")
    store = JobStorage(f"file://{tmp_path}/store", "job1")
    store.upload_dir(str(src), "units/AAPL/lstm")
    assert store.list_files("units/AAPL/lstm") == ["model.pt", "sub/meta.json"]
    store.download_dir("units/AAPL/lstm", str(tmp_path / "back"))
    assert (tmp_path / "back" / "model.pt").read_bytes() == b"weights"

    store.write_unit_status("AAPL__lstm", {"state": "done", "seconds": 3.0})
    store.write_unit_status("MSFT__lstm", {"state": "failed", "error": "boom"})
    assert store.done_unit_ids() == {"AAPL__lstm"}
    assert store.unit_statuses()["MSFT__lstm"]["error"] == "boom"
    with pytest.raises(ValueError, match="'state' must be"):
        store.write_unit_status("X__ols", {"state": "running"})


def test_unparseable_unit_status_counts_as_not_done(tmp_path: Path, caplog) -> None:
    store = JobStorage(f"file://{tmp_path}", "job1")
    store.write_unit_status("AAPL__ols", {"state": "done"})
    status_dir = tmp_path / "jobs" / "job1" / "status"
    (status_dir / "AAPL__lstm__f0.json").write_text('{"state": "do')  # cut short
    (status_dir / "ABT__lstm__f0.json").write_bytes(b"\xff\xfe garbage")
    (status_dir / "ACN__lstm__f0.json").write_text("[1, 2]")  # JSON, not a status
    with caplog.at_level("WARNING", logger="ray_jobs.storage"):
        assert store.unit_statuses() == {"AAPL__ols": {"state": "done", "unit_id": "AAPL__ols"}}
    assert store.done_unit_ids() == {"AAPL__ols"}
    warned = caplog.text
    for unit in ("AAPL__lstm__f0", "ABT__lstm__f0", "ACN__lstm__f0"):
        assert f"jobs/job1/status/{unit}.json cannot be parsed" in warned
    assert "trained again" in warned
    store.write_unit_status("AAPL__lstm__f0", {"state": "done"})  # the rerun rewrites it
    assert "AAPL__lstm__f0" in store.done_unit_ids()


def test_unit_status_read_errors_are_still_retried_then_raise(tmp_path: Path) -> None:
    sleeps: list[float] = []
    store = flaky_storage(tmp_path, {}, sleeps)
    store.write_unit_status("AAPL__ols", {"state": "done"})
    err = "AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 7"
    store.handler.failures["open_input_stream"] = [OSError(err)]
    assert store.done_unit_ids() == {"AAPL__ols"} and sleeps == [0.01]  # retried
    store.handler.failures["open_input_stream"] = [OSError(err)] * 10
    with pytest.raises(StorageError, match=r"read .*AAPL__ols.json.*after 4 attempts"):
        store.unit_statuses()


def test_bad_arguments_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="job_id"):
        JobStorage(str(tmp_path), "../evil")
    with pytest.raises(StorageError, match="gs://"):
        JobStorage("gs://bucket/x", "job1")
    store = JobStorage(str(tmp_path), "job1")
    with pytest.raises(ValueError, match="without '..'"):
        store.path("../other/spec.json")
    with pytest.raises(StorageNotFoundError, match=r"jobs/job1/spec.json.*job id"):
        store.read_spec()


def test_progress_write_is_atomic_under_concurrent_reads(tmp_path: Path) -> None:
    store = JobStorage(str(tmp_path), "job1")
    store.write_progress({"n": 0, "pad": "x" * 50_000})
    target = tmp_path / "jobs" / "job1" / "progress.json"
    stop, bad = threading.Event(), []

    def reader() -> None:
        while not stop.is_set():
            try:
                json.loads(target.read_text())
            except json.JSONDecodeError as exc:  # a torn write
                bad.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for n in range(1, 150):
        store.write_progress({"n": n, "pad": "x" * (50_000 + n)})
    stop.set()
    thread.join()
    assert not bad
    assert store.read_progress()["n"] == 149
    assert [p.name for p in target.parent.iterdir()] == ["progress.json"]  # no temp files


def test_failed_write_keeps_old_content_and_no_temp_file(tmp_path: Path) -> None:
    sleeps: list[float] = []
    store = flaky_storage(tmp_path, {}, sleeps)
    store.write_progress({"n": 1})
    store.handler.failures["move"] = [PermissionError("Permission denied")]
    with pytest.raises(StorageError, match="credentials"):
        store.write_progress({"n": 2})
    assert store.read_progress() == {"n": 1}
    assert store.list_dir("") == ["progress.json"]
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "jobs" / "job-403").iterdir())
    assert sleeps == []


# ---- retries ----------------------------------------------------------------------------
def test_transient_errors_are_retried_with_backoff(tmp_path: Path) -> None:
    sleeps: list[float] = []
    slow = "AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate."
    store = flaky_storage(
        tmp_path, {"open_output_stream": [OSError(slow), TimeoutError("timed out")]}, sleeps
    )
    store.write_json("results/summary.json", {"ok": True})
    assert store.read_json("results/summary.json") == {"ok": True}
    assert store.handler.calls["open_output_stream"] == 3
    assert sleeps == [0.01, 0.02]  # exponential, no jitter in this policy


def test_transient_errors_give_up_after_the_last_attempt(tmp_path: Path) -> None:
    sleeps: list[float] = []
    err = "AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 7"
    store = flaky_storage(tmp_path, {"open_input_stream": [OSError(err)] * 10}, sleeps)
    with pytest.raises(StorageError, match=r"after 4 attempts.*endpoint") as info:
        store.read_bytes("spec.json")
    assert "jobs/job-403/spec.json" in str(info.value)
    assert store.handler.calls["open_input_stream"] == 4
    assert sleeps == [0.01, 0.02, 0.04]  # capped at max_delay_s


def test_permanent_errors_fail_at_once(tmp_path: Path) -> None:
    sleeps: list[float] = []
    denied = "AWS Error ACCESS_DENIED during PutObject operation: Access Denied"
    store = flaky_storage(tmp_path, {"open_output_stream": [OSError(denied)]}, sleeps)
    with pytest.raises(StorageError, match=r"write .*jobs/job-403/spec.json.*credentials"):
        store.write_spec({"a": 1})
    assert store.handler.calls["open_output_stream"] == 1 and sleeps == []
    with pytest.raises(StorageNotFoundError):
        store.read_json("results/missing.json")
    assert sleeps == []


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TimeoutError("read timed out"), True),
        (ConnectionResetError("reset by peer"), True),
        (OSError("AWS Error SLOW_DOWN during PutObject"), True),
        (OSError("AWS Error UNKNOWN (HTTP status 503) during HeadObject"), True),
        (OSError("AWS Error UNKNOWN (HTTP status 404) during HeadObject"), False),
        (OSError("AWS Error ACCESS_DENIED during PutObject: Access Denied"), False),
        (OSError("AWS Error NO_SUCH_BUCKET: The specified bucket does not exist"), False),
        (FileNotFoundError("no such file"), False),
        (ValueError("bad path"), False),
        (OSError("disk quota exceeded"), False),
    ],
)
def test_error_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("AWS Error UNKNOWN (HTTP status 429) during PutObject operation", True),
        ("AWS Error UNKNOWN (HTTP status 408) during GetObject operation", True),
        ("AWS Error UNKNOWN (HTTP status 403) during PutObject operation", False),
        ("AWS Error ACCESS_DENIED during PutObject: Access Denied (connection #3)", False),
        ("NoSuchKey: curl said not found", False),
    ],
)
def test_throttling_is_retried_and_a_permanent_word_beats_a_transient_one(
        message: str, transient: bool) -> None:
    """HTTP 429 (too many requests: a throttling S3-compatible store) and 408 (request
    timeout) are retried like a 5xx; other 4xx are not. A message with both a permanent
    word (access denied, not found) and a transient one (connection, curl) is permanent:
    a denied write fails at once with the credentials fix, not after ~15 s of retries."""
    assert is_transient(OSError(message)) is transient


@pytest.mark.parametrize("message", [
    "Bucket 'no-such-bucket' not found",
    "AWS Error UNKNOWN (HTTP status 404) during GetObject operation: Not Found",
    "NoSuchKey: no such key 'jobs/job-403/spec.json'",
    "AWS Error NO_SUCH_KEY during GetObject operation: The specified key does not exist.",
    "AWS Error NO_SUCH_BUCKET during HeadObject operation",
])
def test_an_object_stores_not_found_is_a_storage_not_found_error(
        tmp_path: Path, message: str) -> None:
    """An object store's "not found" / "no such" message (an OSError, not pyarrow's
    FileNotFoundError) is a StorageNotFoundError, so a FileNotFoundError handler catches
    it, as it does a local file's; it fails at once, without retries."""
    sleeps: list[float] = []
    store = flaky_storage(tmp_path, {"open_input_stream": [OSError(message)]}, sleeps)
    with pytest.raises(StorageNotFoundError) as err:
        store.read_bytes("spec.json")
    assert isinstance(err.value, FileNotFoundError) and sleeps == []
    assert store.handler.calls["open_input_stream"] == 1


def test_classification_ignores_the_path_in_the_message() -> None:
    # A job named "slow-connection" must not make any error on its files look transient.
    path = "b/jobs/slow-connection/x.json"
    msg = f"When writing '{path}': unexpected end of stream"
    assert is_transient(OSError(msg)) is True  # read naively, the path says "connection"
    assert is_transient(OSError(msg), redact=(path,)) is False


def test_retry_policy_validates() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="base_delay_s"):
        RetryPolicy(base_delay_s=2, max_delay_s=1)


# ---- S3 (moto) --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_uri() -> Iterator[str]:
    """An S3 URI (bucket `quantray`, prefix `store`) on a moto server on 127.0.0.1."""
    pytest.importorskip("moto", reason="moto[server] is a dev dependency")
    import boto3
    from moto.server import ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="quantray"
    )
    try:
        yield f"s3://quantray/store?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    finally:
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_s3_roundtrip(s3_uri: str, tmp_path: Path) -> None:
    store = JobStorage(s3_uri, "job1")
    assert store.uri.startswith("s3://quantray/store/jobs/job1?endpoint_override=")
    store.write_spec({"name": "x"})
    store.write_progress({"phase": "preparing"})
    store.write_progress({"phase": "training"})
    table = pa.table({"x": [1, 2, 3]})
    store.write_table("results/leaderboard.parquet", table)
    assert store.read_spec() == {"name": "x"}
    assert store.read_progress() == {"phase": "training"}
    assert store.read_table("results/leaderboard.parquet").equals(table)
    assert store.list_dir("") == ["progress.json", "results", "spec.json"]

    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "model.pt").write_bytes(b"w" * 1000)
    store.upload_dir(str(src), "units/BRK_B/lstm")
    store.download_dir("units/BRK_B/lstm", str(tmp_path / "back"))
    assert (tmp_path / "back" / "model.pt").read_bytes() == b"w" * 1000

    store.write_unit_status("BRK_B__lstm", {"state": "done"})
    assert store.done_unit_ids() == {"BRK_B__lstm"}
    with pytest.raises(StorageNotFoundError, match="s3://quantray/store/jobs/job1/nope.json"):
        store.read_json("nope.json")


def test_s3_ray_storage_carries_the_endpoint(s3_uri: str) -> None:
    ray_storage = JobStorage(s3_uri, "job1").ray_storage()
    assert ray_storage.storage_path == "quantray/store/jobs/job1/ray"
    fs = pickle.loads(pickle.dumps(ray_storage.storage_filesystem))  # RunConfig travels
    assert isinstance(fs, pafs.S3FileSystem)
    with fs.open_output_stream(f"{ray_storage.storage_path}/probe.txt") as f:
        f.write(b"ok")  # the filesystem Ray gets reaches the same server
    assert JobStorage(s3_uri, "job1").read_bytes("ray/probe.txt") == b"ok"


def test_s3_missing_bucket_is_a_permanent_error(s3_uri: str) -> None:
    sleeps: list[float] = []
    store = JobStorage(s3_uri.replace("quantray/", "no-such-bucket/"), "job1", retry=FAST,
                       sleep=sleeps.append)  # fmt: skip
    with pytest.raises(StorageError):
        store.write_spec({"a": 1})
    assert sleeps == []


def test_an_error_that_outlasts_the_retries_is_marked_an_outage_whatever_the_path(
        tmp_path: Path) -> None:
    """The linear units' retry reads this marker: re-reading the cause's message there,
    without the path cut out, took a network error under `jobs/invalid-quotes/...` (a job
    id holding "invalid") for a permanent one."""
    path = f"{tmp_path}/jobs/invalid-quotes/status/A.json"
    down = [OSError(f"When writing '{path}': AWS Error NETWORK_CONNECTION") for _ in range(4)]
    handler = FlakyHandler({"open_output_stream": down})
    store = JobStorage(f"file://{tmp_path}", "invalid-quotes", retry=FAST,
                       filesystem=pafs.PyFileSystem(handler), sleep=lambda s: None)
    with pytest.raises(StorageError) as raised:
        store.write_json("status/A.json", {"state": "done"})
    assert raised.value.outage and "still failing after 4 attempts" in str(raised.value)
    handler.failures["open_output_stream"] = [PermissionError("access denied")]
    with pytest.raises(StorageError) as raised:
        store.write_json("status/A.json", {"state": "done"})
    assert not raised.value.outage


def test_a_storage_error_raised_in_a_task_reaches_the_driver_whole(ray_cluster: str) -> None:
    """A StorageError from a Ray task (an ensemble task's read during an outage) reached
    the driver as "Failed to deserialize exception": its URI, fix and `outage` were lost,
    since it did not unpickle."""
    import ray

    err = StorageError("read", "s3://b/p/x.parquet", OSError("connection refused"),
                       "check the endpoint", outage=True)
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), str(back), back.uri, back.fix, back.outage) == (
        StorageError, str(err), err.uri, err.fix, True)
    gone = pickle.loads(pickle.dumps(StorageNotFoundError("read", "u", "no file", "resubmit")))
    assert isinstance(gone, FileNotFoundError) and gone.outage is False

    @ray.remote(max_retries=0)
    def read_in_a_task() -> None:
        raise err

    with pytest.raises(StorageError) as raised:
        ray.get(read_in_a_task.remote())
    assert raised.value.outage is True
    assert "s3://b/p/x.parquet failed: connection refused. check the endpoint" in str(
        raised.value)
