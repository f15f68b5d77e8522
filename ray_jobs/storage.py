"""One job's files under one storage URI, through `pyarrow.fs`, with retries.

Layout under `{storage_uri}/jobs/{job_id}/` (see ARCHITECTURE.md "Storage layout"):

    spec.json, progress.json          the spec as submitted; the live status
    results/                          leaderboard.parquet/.csv, summary.json, plots/*.png
    units/{symbol}/{model}[/...]/     a unit's model files, metadata, metrics, predictions
    status/{unit_id}.json             one small file per finished unit (done or failed):
                                      the resume marker, listed with a single LIST call
    ray/                              Ray Train/Tune `storage_path` (checkpoints)

Transient errors (timeouts, refused or reset connections, 5xx, SlowDown/throttling) are
retried with exponential backoff and jitter; permanent ones (not found, access denied,
invalid request) fail at once. Either way the caller gets a `StorageError` that names the
URI, the operation and the fix. Local writes are atomic (temp file + rename); an S3 PUT is
atomic by itself.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from data.storage import join_uri, parse_json_rereading, resolve_uri

log = logging.getLogger(__name__)
T = TypeVar("T")

_JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Lower-cased substrings of error messages (after the file's own path is cut out, so a
# job id or a symbol cannot look like an error). Permanent wins over transient.
_PERMANENT = (
    "not found", "no such", "nosuchbucket", "nosuchkey", "access denied", "access_denied",
    "accessdenied", "forbidden", "permission", "invalid", "signaturedoesnotmatch",
    "not a directory", "is a directory", "unsupported", "already exists",
)  # fmt: skip
_TRANSIENT = (
    "timed out", "timeout", "connection", "network", "temporarily", "slowdown", "slow down",
    "slow_down", "throttl", "too many requests", "internal error", "internalerror",
    "internal_failure", "service unavailable", "service_unavailable", "bad gateway",
    "reset by peer", "broken pipe", "try again", "curl", "couldn't connect",
)  # fmt: skip
# "HTTP status 503", "status code: 404", "(status 500)": 5xx, 408 and 429 are transient.
_STATUS_RE = re.compile(r"status(?: code)?\W{0,3}(\d{3})\b")


class StorageError(RuntimeError):
    """A storage operation failed for good; the message names the URI and the fix."""

    def __init__(self, op: str, uri: str, cause: BaseException | str, fix: str, *,
                 outage: bool = False) -> None:
        self.op, self.uri, self.cause, self.fix = op, uri, cause, fix
        # a transient error that outlasted the retries (a storage outage), as `_call`
        # classified it with the path cut out; not a permanent error
        self.outage = outage
        super().__init__(f"{op} {uri} failed: {cause}. {fix}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a Ray task, the error is pickled to reach the driver; the default
        # (the class called with the message alone) failed to unpickle there ("Failed to
        # deserialize exception"), losing the URI, the fix and `outage`. The cause goes as
        # text: an exception of the storage library need not unpickle.
        return (_rebuild_storage_error, (type(self), self.op, self.uri, str(self.cause),
                                         self.fix, self.outage))


def _rebuild_storage_error(cls: type[StorageError], op: str, uri: str, cause: str, fix: str,
                           outage: bool) -> StorageError:
    return cls(op, uri, cause, fix, outage=outage)


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The file or directory does not exist (a permanent error)."""


def is_transient(exc: BaseException, *, redact: tuple[str, ...] = ()) -> bool:
    """Whether retrying `exc` may help. `redact`: strings (the file's path, URI) cut out of
    the message before it is read."""
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | ValueError):
        return False
    if isinstance(exc, NotADirectoryError | FileExistsError | TypeError):
        return False
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if not isinstance(exc, OSError):
        return False
    msg = str(exc)
    for text in sorted((r for r in redact if r), key=len, reverse=True):
        msg = msg.replace(text, "<path>")
    msg = msg.lower()
    status = _STATUS_RE.search(msg)
    if status:
        code = int(status.group(1))
        return code >= 500 or code in (408, 429)
    if any(s in msg for s in _PERMANENT):
        return False
    return any(s in msg for s in _TRANSIENT)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: attempt k (0-based) waits min(max_delay, base * 2**k) * (1 + u),
    u ~ U(0, jitter), before attempt k + 1."""

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts={self.attempts}: use at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError(
                f"RetryPolicy delays base={self.base_delay_s}, max={self.max_delay_s}: "
                "use 0 <= base_delay_s <= max_delay_s"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter={self.jitter}: use a value in [0, 1]")

    def delay(self, attempt: int, rng: random.Random) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2**attempt) * (
            1 + rng.uniform(0, self.jitter)
        )


@dataclass(frozen=True)
class RayStorage:
    """What `ray.train.RunConfig` / `ray.tune.RunConfig` take for this job's Ray files."""

    storage_path: str  # local: absolute path; S3: "bucket/prefix/..." (scheme stripped)
    storage_filesystem: pafs.FileSystem | None  # None for local paths

    def run_config_kwargs(self) -> dict[str, Any]:
        return {"storage_path": self.storage_path, "storage_filesystem": self.storage_filesystem}


class JobStorage:
    """Files of job `job_id` under `storage_uri` (`file:///abs`, `/abs`, `s3://b/p?...`).

    `filesystem` replaces the filesystem resolved from the URI (tests inject failures with
    it); paths still come from the URI. `sleep` and `seed` make retries testable.
    """

    def __init__(
        self,
        storage_uri: str,
        job_id: str,
        *,
        retry: RetryPolicy | None = None,
        filesystem: pafs.FileSystem | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ) -> None:
        if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
            raise ValueError(
                f"job_id {job_id!r}: use 1-128 letters, digits, '.', '_', '-' (it is a path part)"
            )
        if isinstance(storage_uri, str) and storage_uri.startswith("sample:"):
            raise ValueError(f"storage URI {storage_uri!r}: sample: URIs are read-only datasets")
        try:
            base_fs, root = resolve_uri(storage_uri)
        except ValueError as exc:
            raise StorageError("resolve", storage_uri, exc, "fix the storage URI") from exc
        self.storage_uri, self.job_id = storage_uri, job_id
        self.uri = join_uri(storage_uri, "jobs", job_id)
        self.root = f"{root.rstrip('/')}/jobs/{job_id}"
        self.local = isinstance(base_fs, pafs.LocalFileSystem)
        self._base_fs = base_fs
        self.fs = filesystem or base_fs
        self.retry = retry or RetryPolicy()
        self._sleep, self._rng = sleep, random.Random(seed)

    # ---- paths ---------------------------------------------------------------------------
    def path(self, rel: str = "") -> str:
        """Filesystem path of `rel` (relative to the job root; no '..')."""
        parts = PurePosixPath(rel).parts if rel else ()
        if any(p in ("..", "/") for p in parts):
            raise ValueError(f"{rel!r}: give a path inside the job directory, without '..'")
        return "/".join((self.root, *parts))

    def uri_of(self, rel: str) -> str:
        return join_uri(self.uri, rel) if rel else self.uri

    def ray_storage(self) -> RayStorage:
        """Ray's `storage_path` (+ filesystem for S3, so an endpoint override reaches Ray)."""
        if self.local:
            return RayStorage(self.path("ray"), None)
        return RayStorage(self.path("ray"), self._base_fs)

    # ---- retrying core -------------------------------------------------------------------
    def _call(self, op: str, rel: str, fn: Callable[[], T]) -> T:
        uri, path = self.uri_of(rel), self.path(rel)
        # S3 messages quote the key without its bucket; cut out every form of the path.
        redact = (uri, path, path.split("/", 1)[-1])
        for attempt in range(self.retry.attempts):
            try:
                return fn()
            except Exception as exc:  # classified below; nothing is swallowed
                if not is_transient(exc, redact=redact):
                    raise _permanent(op, uri, exc) from exc
                if attempt + 1 == self.retry.attempts:
                    raise StorageError(
                        op, uri, exc,
                        f"still failing after {self.retry.attempts} attempts: check the "
                        "endpoint, network and credentials, then resume the job (finished "
                        "units are kept)", outage=True,
                    ) from exc  # fmt: skip
                wait = self.retry.delay(attempt, self._rng)
                log.warning("%s %s: transient error (%s); retry %d in %.2fs", op, uri, exc,
                            attempt + 1, wait)  # fmt: skip
                self._sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    # ---- bytes, JSON, Parquet ------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        def read() -> bytes:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()

        return self._call("read", rel, read)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write `data` to `rel`; readers see the old or the new content, never half."""
        path = self.path(rel)

        def write() -> None:
            if not self.local:  # an S3 PUT is atomic
                with self.fs.open_output_stream(path) as f:
                    f.write(data)
                return
            parent, name = path.rsplit("/", 1)
            self.fs.create_dir(parent, recursive=True)
            tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                with self.fs.open_output_stream(tmp) as f:
                    f.write(data)
                self.fs.move(tmp, path)  # rename(2): atomic on one filesystem
            except BaseException:
                _delete_quietly(self.fs, tmp)
                raise

        self._call("write", rel, write)

    def read_json(self, rel: str) -> Any:
        """A file rewritten while it is read (progress.json, a status) can come back torn
        from S3: a parse error is read again (`parse_json_rereading`)."""
        try:
            return parse_json_rereading(lambda: self.read_bytes(rel))
        except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
            raise StorageError("parse", self.uri_of(rel), exc, "the file is not JSON") from exc

    def write_json(self, rel: str, obj: Any) -> None:
        """Compact JSON: `json.dumps` without indentation runs its C encoder (an indented
        dump is pure Python, ~10x slower; a sweep writes a few files per unit)."""
        text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
        self.write_bytes(rel, text.encode())

    def write_table(self, rel: str, table: pa.Table) -> None:
        """Write an Arrow table as Parquet (zstd)."""
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(rel, buf.getvalue())

    def read_table(self, rel: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(rel)))

    # ---- listing, deleting, directories --------------------------------------------------
    def exists(self, rel: str) -> bool:
        info = self._call("stat", rel, lambda: self.fs.get_file_info(self.path(rel)))
        return info.type != pafs.FileType.NotFound

    def list_dir(self, rel: str, *, missing_ok: bool = False) -> list[str]:
        """Sorted child names of directory `rel` (temp files hidden). A missing directory
        is an error unless `missing_ok` (then `[]`)."""
        sel = pafs.FileSelector(self.path(rel), recursive=False, allow_not_found=missing_ok)
        infos = self._call("list", rel, lambda: self.fs.get_file_info(sel))
        return sorted(i.base_name for i in infos if not i.base_name.endswith(".tmp"))

    def list_files(self, rel: str) -> list[str]:
        """Sorted paths (relative to `rel`) of every file below `rel`; [] if missing."""
        base = self.path(rel)
        sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        infos = self._call("list", rel, lambda: self.fs.get_file_info(sel))
        return sorted(
            i.path[len(base) + 1 :] for i in infos
            if i.type == pafs.FileType.File and not i.base_name.endswith(".tmp")
        )  # fmt: skip

    def delete_dir(self, rel: str) -> None:
        """Remove directory `rel` and its contents (missing is fine: the goal is reached)."""

        def delete() -> None:
            if self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound:
                self.fs.delete_dir(self.path(rel))

        self._call("delete", rel, delete)

    def upload_dir(self, local_dir: str, rel: str) -> None:
        """Copy local directory `local_dir` (recursively) to `rel`: `local_dir/a/b` becomes
        `rel/a/b`, whether `rel` exists or not. File by file, each an atomic, retried
        `write_bytes` (pyarrow's `copy_files` nests the source folder one level deeper when
        an S3 destination prefix already exists)."""
        root = os.path.abspath(local_dir)
        if not os.path.isdir(root):
            raise StorageError("upload", root, "no such directory", "save the files first")
        for parent, _, files in os.walk(root):
            for name in sorted(files):
                path = os.path.join(parent, name)
                with open(path, "rb") as f:
                    data = f.read()
                self.write_bytes(f"{rel}/{os.path.relpath(path, root)}", data)

    def download_dir(self, rel: str, local_dir: str) -> None:
        """Copy directory `rel` (recursively) into local directory `local_dir`."""

        def download() -> None:
            if self.fs.get_file_info(self.path(rel)).type != pafs.FileType.Directory:
                raise FileNotFoundError(f"{self.uri_of(rel)}: no such directory")
            pafs.LocalFileSystem().create_dir(local_dir, recursive=True)
            pafs.copy_files(self.path(rel), local_dir, source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())  # fmt: skip

        self._call("download", rel, download)

    # ---- the job layout ------------------------------------------------------------------
    def write_spec(self, spec: dict[str, Any]) -> None:
        self.write_json("spec.json", spec)

    def read_spec(self) -> dict[str, Any]:
        return self.read_json("spec.json")

    def write_progress(self, progress: dict[str, Any]) -> None:
        self.write_json("progress.json", progress)

    def read_progress(self) -> dict[str, Any]:
        return self.read_json("progress.json")

    def write_unit_status(self, unit_id: str, status: dict[str, Any]) -> None:
        """Record a finished unit: `{"state": "done" | "failed", ...}`."""
        if status.get("state") not in ("done", "failed"):
            raise ValueError(f"unit status {status!r}: 'state' must be 'done' or 'failed'")
        self.write_json(f"status/{unit_id}.json", dict(status, unit_id=unit_id))

    def unit_statuses(self) -> dict[str, dict[str, Any]]:
        """unit_id -> status of every finished unit (one LIST, then one GET each). A status
        file that cannot be parsed (cut short, garbled; torn reads are read again first) is
        left out with a warning: its unit counts as not done, so a resumed job trains it
        again and rewrites the file. Read errors are retried, then raise, as everywhere."""
        names = [n for n in self.list_dir("status", missing_ok=True) if n.endswith(".json")]
        statuses: dict[str, dict[str, Any]] = {}
        for name in names:
            rel = f"status/{name}"
            try:
                status = self.read_json(rel)
            except StorageError as exc:
                if exc.op != "parse":
                    raise
                status = exc
            if not isinstance(status, dict):  # unparseable, or JSON that is not a status
                what = status.cause if isinstance(status, StorageError) else (
                    f"JSON {type(status).__name__}, not an object")
                log.warning("unit status %s cannot be parsed (%s): its unit counts as not "
                            "done; it is trained again and its status rewritten",
                            self.uri_of(rel), what)
                continue
            statuses[name[: -len(".json")]] = status
        return statuses

    def done_unit_ids(self) -> set[str]:
        """Units to skip on resume: those whose status is `done` (failed ones rerun)."""
        return done_ids(self.unit_statuses())


def done_ids(statuses: dict[str, dict[str, Any]]) -> set[str]:
    """The unit ids of `statuses` ({unit id: status}) whose state is `done`: a resume skips
    them, and reruns the failed ones."""
    return {u for u, s in statuses.items() if s.get("state") == "done"}


# An object store's words for credentials that are missing or not allowed (AWS, MinIO, GCS
# through its S3 API: ACCESS_DENIED, AccessDenied, 403 Forbidden...), as pyarrow passes them
ACCESS_WORDS = ("denied", "forbidden", "invalidaccesskeyid", "signaturedoesnotmatch",
                "no credentials")


def is_access_error(exc: BaseException | str) -> bool:
    """Whether `exc` (or an error's message) says the credentials of the process that met
    it are missing or not allowed."""
    msg = str(exc).lower()
    return isinstance(exc, PermissionError) or any(w in msg for w in ACCESS_WORDS)


WORKERS_HINT = "the Ray workers' own credentials are missing or not allowed"


def worker_access_hint(error: str) -> str:
    """`error`, met in a Ray worker, with what to do when it is an access error: the driver
    read the same dataset or storage a moment before, so the workers' credentials are
    what is missing (a driver run from a shell with credentials, against a cluster
    started without them)."""
    if not is_access_error(error):
        return error
    return (f"{error}; the job's driver could read it, so {WORKERS_HINT}: set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile or an instance role) "
            "where the Ray head and workers run, or pass them "
            "in the job's runtime_env env_vars (the service: QUANTRAY_RAY_RUNTIME_ENV)")


# S3's words for a missing key or bucket (NoSuchKey, NO_SUCH_BUCKET as pyarrow spells them)
NOT_FOUND_WORDS = ("not found", "no such", "nosuchkey", "nosuchbucket", "no_such_key",
                   "no_such_bucket", "does not exist")


def _permanent(op: str, uri: str, exc: BaseException) -> StorageError:
    msg = str(exc).lower()
    if isinstance(exc, FileNotFoundError) or any(w in msg for w in NOT_FOUND_WORDS):
        return StorageNotFoundError(
            op, uri, exc, "check the storage URI and job id; nothing was written there yet"
        )
    if is_access_error(exc):
        return StorageError(
            op, uri, exc, "grant this process's credentials (AWS_ACCESS_KEY_ID/... or the "
            "instance role) read/write access to that bucket/prefix, or use another storage URI"
        )  # fmt: skip
    return StorageError(op, uri, exc, "not retried (a permanent error): fix the request or URI")


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except OSError as exc:  # the temp file may never have been created
        log.debug("could not remove temp file %s: %s", path, exc)
