"""What the service reads and writes under `{storage}/jobs/{job_id}/` (pyarrow.fs only).

Layout (ARCHITECTURE.md): spec.json, progress.json, results/leaderboard.parquet,
results/summary.json, results/plots/*.png, units/{symbol}/{model}/... Every user-supplied
path piece is checked by `safe_relpath` before it touches a filesystem.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from data.storage import (
    join_uri,
    list_dir,
    parse_json_rereading,
    read_bytes,
    resolve_uri,
)
from data.symbols import safe_symbol
from ray_jobs.storage import JobStorage, RetryPolicy

log = logging.getLogger(__name__)
# One path segment: starts with a letter, digit or _ (so never "." or ".." or a hidden
# file; `_GSPC` is where ^GSPC's files are, `data.symbols.safe_symbol`).
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=+@-]{0,199}$")
# A whole artifact path: S3's keys hold at most 1,024 bytes, a local path ~4,096 (a
# longer one, `ENAMETOOLONG`, read as the storage being down: a 503 "retry")
MAX_RELPATH = 1024
PLOT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\.png$"
_PLOT_RE = re.compile(PLOT_NAME_PATTERN)
CHUNK_BYTES = 1 << 16
# ~2 s of backoff over 4 attempts (each may add pyarrow's own connect timeouts)
SUBMIT_RETRY = RetryPolicy(attempts=4, base_delay_s=0.25, max_delay_s=2.0)


class UnsafePath(ValueError):
    """A user-supplied path could leave the job's prefix; the message says which part."""


class StorageUnreadable(RuntimeError):
    """The storage root cannot be read: its endpoint does not answer, its bucket does not
    exist, or access is denied. Not an absent file: that stays FileNotFoundError. `what`
    names what was being read (the app answers it with a 503 `storage_unavailable`)."""

    def __init__(self, uri: str, cause: BaseException | str, what: str = "job files") -> None:
        super().__init__(f"cannot read {what} from {uri}: {cause}")
        self.uri, self.cause, self.what = uri, cause, what


def safe_relpath(path: str, *, what: str = "artifact path") -> str:
    """`path` as a relative POSIX path of plain segments, or `UnsafePath`. Rejects absolute
    paths, `..`/`.`, empty segments, backslashes and `%` (an encoded traversal that survived
    one round of URL decoding)."""
    if not path:
        raise UnsafePath(f"{what} is empty")
    if len(path) > MAX_RELPATH:
        raise UnsafePath(f"{what} {path[:60]!r}... is {len(path):,} characters long; no job "
                         f"file's path is longer than {MAX_RELPATH:,}")
    if path.startswith("/"):
        raise UnsafePath(f"{what} {path!r} is absolute; give a path relative to the job")
    for bad, why in (("\\", "a backslash"), ("%", "a percent-encoded character"), ("\x00", "NUL")):
        if bad in path:
            raise UnsafePath(f"{what} {path!r} contains {why}; use plain '/'-separated names")
    for segment in path.split("/"):
        if segment in ("..", "."):
            raise UnsafePath(f"{what} {path!r} contains {segment!r}; paths cannot leave the job")
        if not _SEGMENT_RE.match(segment):
            raise UnsafePath(
                f"{what} {path!r}: segment {segment!r} is not allowed (ASCII letters A-Z "
                "and a-z, digits and ._=+@- only, starting with a letter, digit or _)"
            )
    return path


def stored_relpath(path: str) -> str:
    """A checked path under units/ whose first segment, a symbol, may be spelled as the
    data spells it: `BRK.B/ols/f0/...` -> `BRK_B/ols/f0/...`, where the job stores it
    (`data.symbols.safe_symbol`; a safe name maps to itself)."""
    try:
        symbol, sep, rest = safe_relpath(path).partition("/")
    except UnsafePath as exc:
        raise UnsafePath(f"{exc}{_safe_form_hint(path)}") from None
    try:
        return safe_symbol(symbol) + sep + rest
    except ValueError as exc:  # `_`: no symbol's files are there
        raise UnsafePath(f"artifact path {path!r}: {exc}") from None


def _safe_form_hint(path: str) -> str:
    """For a path whose symbol (first segment) has characters a path cannot (`AB C`,
    `ÄBC`): the file-safe name its files are stored under, which works (`AB_C`, `_BC`)."""
    symbol, sep, rest = path.partition("/")
    if _SEGMENT_RE.match(symbol) or symbol.startswith(".") or any(c in symbol for c in "\\%\x00"):
        return ""
    try:
        safe = safe_relpath(safe_symbol(symbol) + sep + rest)
    except (ValueError, UnsafePath):  # the rest is wrong too: no hint that would not work
        return ""
    name = safe.partition("/")[0]
    whole = f" ({safe!r})" if sep else ""  # a prefix that is the symbol alone is `name`
    return f"; a symbol's files are stored under its file-safe name: use {name!r}{whole}"


@dataclass(frozen=True)
class Progress:
    """The fields of progress.json the service interprets; `raw` keeps the whole document."""

    phase: str | None
    message: str | None
    units_total: int | None
    units_done: int | None
    units_failed: int
    units_running: int | None
    eta_seconds: float | None
    errors: list[dict[str, Any]]
    raw: dict[str, Any]
    attempt: int = 0  # the job's attempt that wrote it (0 first, +1 per resume)
    units_starting: int | None = None  # deep units whose run is starting up
    units_pending: int | None = None  # waiting for a task or a run slot

    @property
    def fraction(self) -> float | None:
        if not self.units_total:
            return None
        return min(1.0, ((self.units_done or 0) + self.units_failed) / self.units_total)


def parse_progress(doc: Any) -> Progress:
    """Interpret progress.json as `ray_jobs.progress.ProgressTracker.to_dict` writes it:
    `{phase, message, units: {total, done, failed, running, ...}, failures: [{unit_id,
    error}], eta_s, ...}`. Wrong types raise ValueError naming the field."""
    if not isinstance(doc, dict):
        raise ValueError("progress.json must hold a JSON object")
    units = doc.get("units") or {}
    if not isinstance(units, dict):
        raise ValueError("progress.json field 'units' must be an object")

    def number(where: dict[str, Any], key: str, label: str, kind: type) -> Any:
        value = where.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"progress.json field {label!r} must be a number, got {value!r}")
        return kind(value)

    failures = doc.get("failures") or []
    if not isinstance(failures, list):
        raise ValueError("progress.json field 'failures' must be a list")
    errors = [f if isinstance(f, dict) else {"error": str(f)} for f in failures]
    failed = number(units, "failed", "units.failed", int)
    text = {k: doc.get(k) if isinstance(doc.get(k), str) else None for k in ("phase", "message")}
    return Progress(
        phase=text["phase"],
        message=text["message"],
        units_total=number(units, "total", "units.total", int),
        units_done=number(units, "done", "units.done", int),
        units_failed=failed if failed is not None else len(errors),
        units_running=number(units, "running", "units.running", int),
        units_starting=number(units, "starting", "units.starting", int),
        units_pending=number(units, "pending", "units.pending", int),
        eta_seconds=number(doc, "eta_s", "eta_s", float),
        errors=errors,
        raw=doc,
        attempt=number(doc, "attempt", "attempt", int) or 0,
    )


class JobFiles:
    """Reads and writes one storage root's `jobs/` tree."""

    def __init__(self, storage_uri: str) -> None:
        self.storage_uri = storage_uri

    def uri(self, job_id: str, *parts: str) -> str:
        safe_relpath(job_id, what="job id")
        return join_uri(self.storage_uri, "jobs", job_id, *parts)

    def check(self) -> None:
        """Raise if the storage root cannot be reached, or its S3 bucket does not exist
        (for /readyz: every submit would fail)."""
        fs, path = resolve_uri(self.storage_uri)
        fs.get_file_info(path)
        if isinstance(fs, pafs.S3FileSystem):
            bucket = path.split("/", 1)[0]
            try:
                missing = fs.get_file_info(bucket).type == pafs.FileType.NotFound
            except OSError:  # HeadBucket denied to keys scoped to a prefix: the first look
                return       # (above) reached the endpoint, which is what is asked here
            if missing:
                raise FileNotFoundError(f"bucket {bucket!r} does not exist: create it, or fix "
                                        "QUANTRAY_STORAGE_URI")

    def _contained(self, job_id: str, fs: pafs.FileSystem, path: str) -> None:
        """On a local storage root, `FileNotFoundError` unless `path`, with its symlinks
        resolved, is inside jobs/{job_id}/: a link in the storage (placed by hand, or by
        anything else that writes there) must not let the API serve a file elsewhere on
        the server (/etc/passwd, another job's or key's files). Object stores have no
        links."""
        if not isinstance(fs, pafs.LocalFileSystem):
            return
        root = os.path.realpath(resolve_uri(self.uri(job_id))[1])
        real = os.path.realpath(path)
        if real != root and not real.startswith(root + os.sep):
            log.warning("job %s: not serving %s, a link to %s outside the job", job_id, path,
                        real)  # the operator's clue; the client gets a plain 404
            raise FileNotFoundError(
                f"job {job_id}'s {path!r} is a link that leads outside the job's directory; "
                "such files are not served"
            )

    def _local_files(self, job_id: str, root: str) -> list[tuple[str, int]]:
        """(path, size) of the files under local directory `root`, symlinked directories not
        followed and symlinked files kept only when they stay inside the job (`_contained`):
        pyarrow's recursive listing follows links, out of the job and around loops."""
        found = []
        for dirpath, _dirs, names in os.walk(root, followlinks=False):
            for name in names:
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    try:
                        self._contained(job_id, pafs.LocalFileSystem(), path)
                    except FileNotFoundError:
                        continue
                if os.path.isfile(path):
                    found.append((path, os.path.getsize(path)))
        return sorted(found)

    @contextmanager
    def _reading(self, job_id: str, what: str) -> Iterator[None]:
        """Reads of job `job_id`'s `what`: an absent file (FileNotFoundError) only where the
        storage answers and its bucket exists (an S3 key in a missing bucket reads as absent
        too); any other OSError (endpoint down, access denied) is `StorageUnreadable`."""
        what = f"job {job_id}'s {what}"
        try:
            yield
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            try:
                self.check()
            except OSError as down:
                raise StorageUnreadable(self.storage_uri, down, what) from None
            raise FileNotFoundError(str(exc)) from None
        except OSError as exc:
            raise StorageUnreadable(self.storage_uri, exc, what) from None

    def write_spec(self, job_id: str, spec: dict[str, Any]) -> None:
        """Write spec.json, retrying transient errors for a few seconds (a submit waits on
        it); a `StorageError` names the URI and the cause when it cannot."""
        text = json.dumps(spec, indent=2, sort_keys=True, default=str)
        storage = JobStorage(self.storage_uri, job_id, retry=SUBMIT_RETRY)
        storage.write_bytes("spec.json", text.encode())

    def read_driver_log(self, job_id: str, attempt: int) -> str | None:
        """The copy of attempt `attempt`'s driver log the job stored (`ray_jobs.driver_log`),
        or None when there is none; `StorageUnreadable` when the storage cannot be read."""
        from ray_jobs.driver_log import log_path

        try:
            with self._reading(job_id, f"stored driver log ({log_path(attempt)})"):
                raw = self._read_file(job_id, *log_path(attempt).split("/"))
        except FileNotFoundError:
            return None
        return raw.decode("utf-8", errors="replace")

    def _read_file(self, job_id: str, *parts: str) -> bytes:
        """The bytes of jobs/{job_id}/{parts}, refused when a link leads outside the job."""
        uri = self.uri(job_id, *parts)
        fs, path = resolve_uri(uri)
        self._contained(job_id, fs, path)
        return read_bytes(uri)

    def has_spec(self, job_id: str) -> bool:
        """Whether jobs/{job_id}/spec.json is in this storage (False: the job was stored
        elsewhere, e.g. QUANTRAY_STORAGE_URI changed since it was submitted);
        `StorageUnreadable` when the storage cannot be read."""
        fs, path = resolve_uri(self.uri(job_id, "spec.json"))
        try:
            with self._reading(job_id, "spec.json"):
                if fs.get_file_info(path).type != pafs.FileType.File:
                    raise FileNotFoundError(path)
        except FileNotFoundError:
            return False
        return True

    def remove_job(self, job_id: str) -> None:
        """Delete everything under jobs/{job_id}/ (undo of a job whose row never landed)."""
        fs, path = resolve_uri(self.uri(job_id))
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            fs.delete_dir(path)

    def read_progress(self, job_id: str, attempt: int | None = None) -> Progress | None:
        """None while the job has not written progress.json yet, and, given the job's
        `attempt`, while the file is still the previous attempt's (a resumed job's new
        driver has not written its own yet; a file without the field is attempt 0's)."""
        uri = self.uri(job_id, "progress.json")
        try:
            doc = parse_json_rereading(lambda: read_bytes(uri))  # rewritten every few s
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ValueError(f"{uri} is not valid JSON: {exc}") from None
        progress = parse_progress(doc)
        if attempt is not None and progress.attempt != attempt:
            return None
        return progress

    # The reads below raise FileNotFoundError for an absent file and `StorageUnreadable`
    # when the storage itself cannot be read (see `_reading`).
    def read_summary(self, job_id: str) -> Any:
        with self._reading(job_id, "results/summary.json"):
            raw = self._read_file(job_id, "results", "summary.json")
        # Python's json writes NaN/Infinity (a Tune config's metric, a std of one value),
        # which JSON cannot carry: null, as in the leaderboard's rows
        return json.loads(raw, parse_constant=lambda _: None)

    def read_leaderboard(self, job_id: str) -> pa.Table:
        fs, path = resolve_uri(self.uri(job_id, "results", "leaderboard.parquet"))
        with self._reading(job_id, "results/leaderboard.parquet"):
            if fs.get_file_info(path).type != pafs.FileType.File:
                raise FileNotFoundError(f"job {job_id} has no results/leaderboard.parquet yet")
            self._contained(job_id, fs, path)
            return pq.read_table(path, filesystem=fs)

    def plot_bytes(self, job_id: str, name: str) -> bytes:
        if not _PLOT_RE.match(name):
            raise UnsafePath(f"plot name {name!r} must be a plain file name ending in .png")
        with self._reading(job_id, f"plot results/plots/{name}"):
            return self._read_file(job_id, "results", "plots", name)

    def list_plots(self, job_id: str) -> list[str]:
        """The plots' names; [] while there are none (a missing bucket is not "none")."""
        uri = self.uri(job_id, "results", "plots")
        try:
            with self._reading(job_id, "plot list (results/plots/)"):
                names = list_dir(uri)
        except FileNotFoundError:
            return []
        fs, path = resolve_uri(uri)
        if isinstance(fs, pafs.LocalFileSystem):  # links out of the job are not served
            served = {os.path.basename(p) for p, _ in self._local_files(job_id, path)}
            names = [n for n in names if n in served]
        return [n for n in names if n.endswith(".png")]

    def list_artifacts(self, job_id: str, prefix: str = "") -> list[dict[str, Any]]:
        """Files under units/ (recursively) as {path, size}, paths relative to units/; the
        prefix's symbol may be spelled as in the data (see `stored_relpath`); a folder's
        prefix may end in one '/' (`BRK.B/ols/`)."""
        prefix = prefix.removesuffix("/")
        base = (
            self.uri(job_id, "units", stored_relpath(prefix)) if prefix
            else self.uri(job_id, "units")
        )  # fmt: skip
        fs, root = resolve_uri(base)
        units_root = resolve_uri(self.uri(job_id, "units"))[1].rstrip("/") + "/"
        with self._reading(job_id, f"artifact list (units/{prefix})"):
            if fs.get_file_info(root).type != pafs.FileType.Directory:
                raise FileNotFoundError(f"job {job_id} has no artifacts under units/{prefix}")
            if isinstance(fs, pafs.LocalFileSystem):
                self._contained(job_id, fs, root)
                files = self._local_files(job_id, root)
            else:
                infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
                files = sorted((i.path, i.size) for i in infos if i.type == pafs.FileType.File)
        return [{"path": path[len(units_root) :], "size": size} for path, size in files]

    def slash_symbol_form(self, job_id: str, path: str) -> str | None:
        """For an artifact path or prefix that was not found, whose first segments are a
        symbol with '/'s (`BF/B/ols/f0`, `A/B/C/ols`): the path under that symbol's
        file-safe name (`BF_B/ols/f0`, `A_B_C/ols`) when that file or folder is there, else
        None (asked on a 404 only). None too when the first segment is itself a stored
        symbol (`X/ols` of a symbol X without ols, beside a symbol `X_ols`): that path is
        simply missing."""
        segments = path.removesuffix("/").split("/")
        if len(segments) < 2 or not all(segments):
            return None
        try:
            if self._exists(job_id, safe_symbol(segments[0])):
                return None
        except ValueError:  # no letter or digit: no symbol's folder
            pass
        for k in range(len(segments), 1, -1):  # the longest symbol first
            try:
                symbol = safe_symbol("/".join(segments[:k]))
            except ValueError:
                continue
            candidate = "/".join([symbol, *segments[k:]])
            if self._exists(job_id, candidate):  # False for an unsafe path too
                return candidate
        return None

    def _exists(self, job_id: str, relpath: str) -> bool:
        """Whether units/{relpath} (a file or folder, `relpath` as stored) is there."""
        try:
            relpath = safe_relpath(relpath)
        except UnsafePath:
            return False
        fs, where = resolve_uri(self.uri(job_id, "units", relpath))
        with self._reading(job_id, f"artifact units/{relpath}"):
            return fs.get_file_info(where).type != pafs.FileType.NotFound

    def open_artifact(self, job_id: str, relpath: str) -> tuple[int, Iterator[bytes]]:
        """(size, chunk iterator) for file units/{relpath}; FileNotFoundError if absent."""
        fs, path = resolve_uri(self.uri(job_id, "units", stored_relpath(relpath)))
        with self._reading(job_id, f"artifact units/{relpath}"):
            info = fs.get_file_info(path)
            if info.type != pafs.FileType.File:
                raise FileNotFoundError(f"job {job_id} has no artifact {relpath!r}")
            self._contained(job_id, fs, path)

        def chunks() -> Iterator[bytes]:
            with fs.open_input_stream(path) as stream:
                while chunk := stream.read(CHUNK_BYTES):
                    yield chunk

        return int(info.size or 0), chunks()
