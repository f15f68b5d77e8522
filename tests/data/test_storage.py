"""data.storage: URI resolution, joins, byte I/O on local disk and on S3 (moto)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from data import storage
from data.storage import exists, join_uri, list_dir, read_bytes, resolve_uri, write_bytes


def _s3_args(fs: pafs.S3FileSystem) -> dict:
    return fs.__reduce__()[1][0]  # the constructor kwargs pyarrow pickles the filesystem with


def test_plain_path_resolves_to_absolute_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = resolve_uri("sub/bars.parquet")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == str(tmp_path / "sub" / "bars.parquet")


def test_file_uri_resolves_to_its_absolute_path():
    fs, path = resolve_uri("file:///data/my%20bars/x.csv")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == "/data/my bars/x.csv"


@pytest.mark.parametrize(
    "uri, words",
    [
        ("file://host/x.csv", "three slashes"),
        ("file:///x.csv?region=a", "query string"),
        ("gs://bucket/key", "unsupported URI scheme 'gs'"),
        ("s3:///key", "no bucket"),
        ("s3://b/k?endpoint=http://x", "unknown query parameter 'endpoint'"),
        ("s3://b/k?region=a&region=b", "given twice"),
        ("s3://b/k?scheme=ftp", "scheme must be http or https"),
        ("s3://b/k?anonymous=maybe", "anonymous must be true or false"),
        ("sample:nope", "sample:sp500"),
        ("", "non-empty"),
    ],
)
def test_bad_uris_raise_naming_the_problem(uri, words):
    with pytest.raises(ValueError, match=words.replace("?", r"\?")):
        resolve_uri(uri)


def test_s3_query_parameters_map_to_filesystem_arguments():
    fs, path = resolve_uri(
        "s3://bucket/pre/fix/key.parquet?endpoint_override=http://127.0.0.1:9000"
        "&region=eu-west-1&scheme=http&anonymous=true"
    )
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == "bucket/pre/fix/key.parquet"
    args = _s3_args(fs)
    assert args["endpoint_override"] == "http://127.0.0.1:9000"
    assert args["region"] == "eu-west-1"
    assert args["scheme"] == "http"
    assert args["anonymous"] is True


def test_s3_bucket_only_uri_resolves_to_bucket():
    _, path = resolve_uri("s3://bucket/?region=us-east-1")
    assert path == "bucket"


def test_sample_uri_resolves_inside_the_package():
    fs, path = resolve_uri("sample:sp500")
    assert isinstance(fs, pafs.LocalFileSystem)
    package_dir = Path(storage.__file__).resolve().parent
    assert Path(path) == package_dir / "sample" / "sp500_sample.parquet"
    assert Path(path).is_file()


@pytest.mark.parametrize(
    "base, parts, expected",
    [
        ("s3://b/pre?endpoint_override=http://h:1", ("jobs", "j1/"), "s3://b/pre/jobs/j1?endpoint_override=http://h:1"),
        ("s3://b/pre/", ("a",), "s3://b/pre/a"),
        ("file:///tmp/root", ("x", "y.json"), "file:///tmp/root/x/y.json"),
        ("/tmp/root/", ("/x/",), "/tmp/root/x"),
    ],
)
def test_join_uri_appends_parts_and_keeps_query(base, parts, expected):
    assert join_uri(base, *parts) == expected


def test_join_uri_rejects_empty_parts():
    with pytest.raises(ValueError, match="empty path part"):
        join_uri("/tmp/root", "a", "/")


def test_local_write_read_roundtrip_creates_parents(tmp_path):
    uri = str(tmp_path / "a" / "b" / "blob.bin")
    write_bytes(uri, b"one")
    write_bytes(uri, b"two")  # replaces
    assert read_bytes(uri) == b"two"
    assert read_bytes("file://" + uri) == b"two"
    assert os.listdir(tmp_path / "a" / "b") == ["blob.bin"]  # no temp files left behind


def test_failed_local_write_keeps_old_content_and_no_temp_file(tmp_path, monkeypatch):
    uri = str(tmp_path / "state.json")
    write_bytes(uri, b"old")

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        write_bytes(uri, b"new-but-broken")
    assert read_bytes(uri) == b"old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_exists_and_list_dir_local(tmp_path):
    write_bytes(str(tmp_path / "d" / "b.txt"), b"b")
    write_bytes(str(tmp_path / "d" / "a.txt"), b"a")
    (tmp_path / "d" / "sub").mkdir()
    assert exists(str(tmp_path / "d" / "a.txt"))
    assert exists(str(tmp_path / "d"))
    assert not exists(str(tmp_path / "nope"))
    assert list_dir(str(tmp_path / "d")) == ["a.txt", "b.txt", "sub"]


def test_missing_paths_raise_naming_the_uri(tmp_path):
    missing = str(tmp_path / "nope.bin")
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        read_bytes(missing)
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        list_dir(missing)
    with pytest.raises(IsADirectoryError, match="expected a file"):
        read_bytes(str(tmp_path))


def test_s3_roundtrip_through_moto(s3_bucket, moto_endpoint):
    client, bucket = s3_bucket
    base = f"s3://{bucket}/jobs?endpoint_override={moto_endpoint}&region=us-east-1"
    uri = join_uri(base, "j1", "spec.json")
    assert not exists(uri)
    write_bytes(uri, b'{"a": 1}')
    write_bytes(join_uri(base, "j1", "progress.json"), b"{}")
    # what boto3 sees is what pyarrow wrote
    body = client.get_object(Bucket=bucket, Key="jobs/j1/spec.json")["Body"].read()
    assert body == b'{"a": 1}'
    assert read_bytes(uri) == b'{"a": 1}'
    assert exists(uri)
    assert list_dir(join_uri(base, "j1")) == ["progress.json", "spec.json"]
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_bytes(join_uri(base, "j1", "missing.json"))


def test_a_torn_json_read_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 reads take the size, then the bytes: a rewrite in between tears the read. The
    next read sees the whole new file; a file that stays broken still raises."""
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    old, new = b'{"phase": "training", "done": 3}', b'{"phase": "training", "done": 4, "x": 1}'
    reads = iter([new[: len(old)], old + b"}", new])  # cut short, then padded, then whole
    assert storage.parse_json_rereading(lambda: next(reads), attempts=3) == {
        "phase": "training", "done": 4, "x": 1}
    calls = []

    def broken() -> bytes:
        calls.append(1)
        return b'{"phase": '

    with pytest.raises(ValueError):
        storage.parse_json_rereading(broken, attempts=3)
    assert len(calls) == 3
