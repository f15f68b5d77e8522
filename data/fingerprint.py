"""What a dataset is at one moment: its files' sizes and modification times, and for a
local dataset of up to HASH_LIMIT_BYTES their contents' SHA-256, so that a job rerun or
resumed later can tell whether its data changed in between (its finished units were
trained on the data as it was).

A file copied again with the same content keeps its hash, so a local dataset of that size
is only "changed" when its bytes are; a larger or remote (S3) one is compared by size and
modification time, which a re-upload of the same content also changes.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pyarrow.fs as pafs

from data.storage import resolve_uri

HASH_LIMIT_BYTES = 256 * 2**20  # local datasets up to this size are hashed (~0.2 s a 256 MB)
_CHUNK = 4 * 2**20
SHOWN = 3  # changed files named in a description


def dataset_fingerprint(uri: str) -> dict[str, Any]:
    """{"uri", "files": {name: {"bytes", "modified", "sha256"?}}} for the file or the
    directory `uri` names (the files a Parquet dataset reads: not those starting with '_'
    or '.'); a missing path raises FileNotFoundError."""
    fs, path = resolve_uri(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"dataset not found: {uri}")
    if info.type == pafs.FileType.Directory:
        infos = [i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
                 if i.type == pafs.FileType.File
                 and not any(part.startswith(("_", ".")) for part in
                             i.path[len(path):].strip("/").split("/"))]  # fmt: skip
        named = {i.path[len(path):].strip("/"): i for i in infos}
    else:
        named = {info.base_name: info}
    local = isinstance(fs, pafs.LocalFileSystem)
    hashed = local and sum(i.size or 0 for i in named.values()) <= HASH_LIMIT_BYTES
    files: dict[str, dict[str, Any]] = {}
    for name in sorted(named):
        item = named[name]
        entry: dict[str, Any] = {"bytes": item.size, "modified": _when(item.mtime_ns)}
        if hashed:
            entry["sha256"] = _sha256(fs, item.path)
        files[name] = entry
    return {"uri": uri, "files": files}


def _when(mtime_ns: int | None) -> str | None:
    if mtime_ns is None:
        return None
    return datetime.fromtimestamp(mtime_ns / 1e9, UTC).isoformat(timespec="microseconds")


def _sha256(fs: pafs.FileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints of one dataset, a phrase each ([] if nothing):
    files added or removed, and files whose content differs (by hash where both have one,
    else by size or modification time)."""
    old, new = before.get("files") or {}, now.get("files") or {}
    changes = [f"{name} was added" for name in sorted(set(new) - set(old))]
    changes += [f"{name} was removed" for name in sorted(set(old) - set(new))]
    for name in sorted(set(old) & set(new)):
        a, b = old[name], new[name]
        if a.get("sha256") and b.get("sha256"):
            if a["sha256"] != b["sha256"]:
                changes.append(f"{name}'s content differs ({_bytes(a)} then, {_bytes(b)} now)")
        elif a.get("bytes") != b.get("bytes"):
            changes.append(f"{name} has {_bytes(b)}, {_bytes(a)} then")
        elif a.get("modified") and b.get("modified") and a["modified"] != b["modified"]:
            changes.append(f"{name} was modified at {b['modified']} ({a['modified']} then)")
    return changes


def describe_changes(changes: list[str]) -> str:
    more = len(changes) - SHOWN
    return "; ".join(changes[:SHOWN]) + (f"; and {more} more file(s)" if more > 0 else "")


def _bytes(entry: dict[str, Any]) -> str:
    size = entry.get("bytes")
    return "an unknown size" if size is None else f"{size:,} bytes"
