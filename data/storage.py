"""URIs -> `pyarrow.fs` filesystems, plus the few byte-level helpers every layer uses.

Accepted URIs
- plain local paths (`data/bars.parquet`, `~/bars.csv`, `/abs/dir`), made absolute;
- `file:///abs/path` (host empty or `localhost`, no query string);
- `s3://bucket/key?endpoint_override=http://127.0.0.1:9000&region=us-east-1&scheme=http`
  with optional query parameters `endpoint_override`, `region`, `scheme` (http|https) and
  `anonymous` (true|false). Credentials come from the standard AWS chain (the
  `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` env vars first).
  pyarrow ignores `AWS_ENDPOINT_URL`, so a non-AWS endpoint must be given explicitly;
- `sample:NAME`: a dataset bundled with the package (see `data.sample`).

Everything here is generic and retry-free on purpose: the Ray layer wraps it with its
own retrying storage, and this module must not import Ray.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pyarrow.fs as pafs

S3_PARAMS = ("endpoint_override", "region", "scheme", "anonymous")
_SCHEMES = ("file://", "s3://", "sample:")
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def resolve_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """Map `uri` to `(filesystem, path)`; the path is what that filesystem's methods take."""
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"storage URI must be a non-empty string, got {uri!r}")
    if uri.startswith("sample:"):
        from data.sample import sample_path

        return pafs.LocalFileSystem(), str(sample_path(uri[len("sample:") :]))
    if uri.startswith("s3://"):
        return _resolve_s3(uri)
    if uri.startswith("file:"):
        return pafs.LocalFileSystem(), _file_uri_path(uri)
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise ValueError(
            f"unsupported URI scheme {scheme!r} in {uri!r}: use a local path, "
            f"or one of {', '.join(s + '...' for s in _SCHEMES)}"
        )
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def _file_uri_path(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"file URI {uri!r} names host {parts.netloc!r}: use file:///abs/path (three slashes)"
        )
    if parts.query:
        raise ValueError(f"file URI {uri!r} has a query string {parts.query!r}; remove it")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ValueError(f"file URI {uri!r} must hold an absolute path: file:///abs/path")
    return path


def _resolve_s3(uri: str) -> tuple[pafs.FileSystem, str]:
    parts = urlsplit(uri)
    bucket = parts.netloc
    if not bucket:
        raise ValueError(f"S3 URI {uri!r} has no bucket: use s3://bucket/key")
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in S3_PARAMS:
            raise ValueError(
                f"S3 URI {uri!r}: unknown query parameter {key!r}; allowed: {', '.join(S3_PARAMS)}"
            )
        if key in params:
            raise ValueError(f"S3 URI {uri!r}: query parameter {key!r} is given twice")
        params[key] = value
    kwargs: dict[str, object] = {}
    for key in ("endpoint_override", "region"):
        if key in params:
            kwargs[key] = params[key]
    if "scheme" in params:
        if params["scheme"] not in ("http", "https"):
            raise ValueError(
                f"S3 URI {uri!r}: scheme must be http or https, got {params['scheme']!r}"
            )
        kwargs["scheme"] = params["scheme"]
    if "anonymous" in params:
        flag = params["anonymous"].lower()
        if flag not in _TRUE + _FALSE:
            raise ValueError(f"S3 URI {uri!r}: anonymous must be true or false, got {flag!r}")
        kwargs["anonymous"] = flag in _TRUE
    key_path = unquote(parts.path).strip("/")
    path = f"{bucket}/{key_path}" if key_path else bucket
    return pafs.S3FileSystem(**kwargs), path


def join_uri(base: str, *parts: str) -> str:
    """`base` + "/" + parts, keeping an S3 query string at the end (`s3://b/p/x?endpoint...`)."""
    clean = []
    for part in parts:
        stripped = part.strip("/")
        if not stripped:
            raise ValueError(f"join_uri({base!r}, ...): empty path part {part!r}")
        clean.append(stripped)
    if base.startswith("sample:"):
        raise ValueError(f"cannot join paths onto {base!r}: sample: URIs name a single file")
    head, sep, query = base.partition("?")
    if not head:
        raise ValueError("join_uri: empty base URI")
    joined = (head if head.endswith("/") else head + "/") + "/".join(clean)
    return joined + sep + query


def read_bytes(uri: str) -> bytes:
    """The whole content of file `uri`; FileNotFoundError names the URI when it is missing."""
    fs, path = resolve_uri(uri)
    _require(fs, path, uri, pafs.FileType.File)
    with fs.open_input_stream(path) as f:
        return f.read()


def parse_json_rereading(read: Callable[[], bytes], attempts: int = 3,
                         wait_s: float = 0.2) -> Any:
    """The JSON of a file that a writer replaces while others read it (progress.json, a
    unit's status). An S3 read through pyarrow asks for the object's size, then for its
    bytes, so a PUT in between gives the new object cut at the old size (or the old size's
    worth of a longer one): a torn read, seen about once in 1,300 reads of a job's live
    progress on moto. A parse error is therefore read again, up to `attempts` reads,
    before the last one's ValueError is raised."""
    for attempt in range(attempts):
        raw = read()
        try:
            return json.loads(raw)
        except ValueError:
            if attempt + 1 == attempts:
                raise
            time.sleep(wait_s)
    raise AssertionError("unreachable")


def write_bytes(uri: str, data: bytes) -> None:
    """Write `data` to `uri`. Local files are replaced atomically (temp file + rename), so a
    reader never sees half a file; S3 PUTs are atomic by themselves."""
    fs, path = resolve_uri(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        _atomic_local_write(Path(path), data)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def _atomic_local_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def exists(uri: str) -> bool:
    """Whether a file or directory exists at `uri`."""
    fs, path = resolve_uri(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_dir(uri: str) -> list[str]:
    """Sorted names (not paths) of the direct children of directory `uri`."""
    fs, path = resolve_uri(uri)
    _require(fs, path, uri, pafs.FileType.Directory)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(info.base_name for info in infos)


def _require(fs: pafs.FileSystem, path: str, uri: str, kind: pafs.FileType) -> None:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{uri}: no such file or directory")
    if info.type != kind:
        want = "a file" if kind == pafs.FileType.File else "a directory"
        raise (IsADirectoryError if kind == pafs.FileType.File else NotADirectoryError)(
            f"{uri}: expected {want}"
        )
