"""A dataset's fingerprint tells a later run whether the data changed: by content for a
local dataset (a file copied again is the same data), by size and modification time for a
remote one (S3 through a moto HTTP endpoint) or a local one over the hashing limit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from data import fingerprint as fp


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_a_local_file_changes_with_its_content_not_its_time(tmp_path: Path) -> None:
    data = tmp_path / "bars.csv"
    _write(data, "date,symbol,close\n2018-01-02,AAA,1.0\n")
    before = fp.dataset_fingerprint(str(data))
    assert list(before["files"]) == ["bars.csv"] and before["files"]["bars.csv"]["sha256"]

    copy = tmp_path / "copy.csv"
    shutil.copyfile(data, copy)
    os.utime(copy, (1e9, 1e9))  # copied again: another modification time, same bytes
    copy.replace(data)
    assert fp.fingerprint_changes(before, fp.dataset_fingerprint(str(data))) == []

    _write(data, "date,symbol,close\n2018-01-02,AAA,9.0\n")  # same size, other data
    changes = fp.fingerprint_changes(before, fp.dataset_fingerprint(str(data)))
    assert len(changes) == 1 and changes[0].startswith("bars.csv's content differs"), changes


def test_a_directory_names_the_files_added_removed_and_changed(tmp_path: Path) -> None:
    root = tmp_path / "bars"
    for name in ("symbol=AAA/part-0.parquet", "symbol=BBB/part-0.parquet"):
        _write(root / name, name)
    _write(root / "_SUCCESS", "")  # not read as data: not in the fingerprint
    _write(root / ".hidden/x.parquet", "x")
    before = fp.dataset_fingerprint(root.as_uri())
    assert sorted(before["files"]) == ["symbol=AAA/part-0.parquet", "symbol=BBB/part-0.parquet"]

    _write(root / "_SUCCESS", "written again")
    assert fp.fingerprint_changes(before, fp.dataset_fingerprint(root.as_uri())) == []

    (root / "symbol=BBB/part-0.parquet").unlink()
    _write(root / "symbol=CCC/part-0.parquet", "new")
    _write(root / "symbol=AAA/part-0.parquet", "more rows than before")
    changes = fp.fingerprint_changes(before, fp.dataset_fingerprint(root.as_uri()))
    assert changes == [
        "symbol=CCC/part-0.parquet was added",
        "symbol=BBB/part-0.parquet was removed",
        "symbol=AAA/part-0.parquet's content differs (25 bytes then, 21 bytes now)",
    ], changes
    assert fp.describe_changes(changes * 2).endswith("; and 3 more file(s)")


def test_over_the_hashing_limit_size_and_time_tell(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp, "HASH_LIMIT_BYTES", 10)
    data = tmp_path / "bars.csv"
    _write(data, "date,symbol,close\n")
    os.utime(data, (1e9, 1e9))
    before = fp.dataset_fingerprint(str(data))
    assert "sha256" not in before["files"]["bars.csv"]
    assert fp.fingerprint_changes(before, fp.dataset_fingerprint(str(data))) == []
    os.utime(data, (2e9, 2e9))
    changes = fp.fingerprint_changes(before, fp.dataset_fingerprint(str(data)))
    assert len(changes) == 1 and "was modified at 2033-05-18" in changes[0], changes


def test_a_missing_dataset_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.parquet"):
        fp.dataset_fingerprint(str(tmp_path / "nothing.parquet"))


def test_an_s3_dataset_is_compared_by_size_and_time(s3_bucket, moto_endpoint) -> None:
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="data/bars.csv", Body=b"date,symbol,close\n")
    uri = f"s3://{bucket}/data/bars.csv?endpoint_override={moto_endpoint}&region=us-east-1"
    before = fp.dataset_fingerprint(uri)
    entry = before["files"]["bars.csv"]
    assert entry["bytes"] == 18 and entry["modified"] and "sha256" not in entry
    assert fp.fingerprint_changes(before, fp.dataset_fingerprint(uri)) == []

    client.put_object(Bucket=bucket, Key="data/bars.csv", Body=b"date,symbol,close\nx\n")
    changes = fp.fingerprint_changes(before, fp.dataset_fingerprint(uri))
    assert changes == ["bars.csv has 20 bytes, 18 bytes then"], changes
