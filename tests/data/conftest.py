"""Fixtures for the data-layer tests: bar frames, file writers, an S3 server, a filesystem
that counts the bytes it serves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from service.local_ray import free_port

SHARED_SP500 = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sp500_daily.parquet"
)


def make_bars(
    symbols: tuple[str, ...] = ("AAA", "BBB"), n: int = 40, seed: int = 0
) -> pd.DataFrame:
    """Clean long bars: a positive random walk per symbol, OHLC consistent, volume > 0."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=n)
    frames = []
    for symbol in symbols:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        open_ = np.concatenate([[close[0]], close[:-1]])
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "date": dates,
                    "open": open_,
                    "high": np.maximum(open_, close) * 1.01,
                    "low": np.minimum(open_, close) * 0.99,
                    "close": close,
                    "volume": rng.integers(1_000, 10_000, n),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def make_lob(symbols: tuple[str, ...] = ("AAA",), n: int = 30, levels: int = 2) -> pd.DataFrame:
    """Clean long LOB snapshots, one per second, ask above bid at every level."""
    rng = np.random.default_rng(1)
    frames = []
    for symbol in symbols:
        mid = 50 + np.cumsum(rng.normal(0, 0.01, n))
        cols: dict[str, object] = {
            "symbol": symbol,
            "ts": pd.date_range("2021-03-01 09:30", periods=n, freq="s"),
        }
        for side, sign in (("ask", 1), ("bid", -1)):
            for k in range(1, levels + 1):
                cols[f"{side}_price_{k}"] = mid + sign * 0.01 * k
                cols[f"{side}_size_{k}"] = rng.integers(1, 100, n).astype(float)
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def write_frame(tmp_path: Path) -> Callable[..., str]:
    """write_frame(df, fmt, name="bars") -> path of `df` written as CSV or Parquet."""

    def write(df: pd.DataFrame, fmt: str, name: str = "bars", **parquet_kwargs) -> str:
        path = tmp_path / f"{name}.{fmt}"
        if fmt == "csv":
            df.to_csv(path, index=False)
        else:
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, **parquet_kwargs)
        return str(path)

    return write


@pytest.fixture(scope="session")
def sp500_shared() -> Path:
    if not SHARED_SP500.is_file():
        pytest.skip(f"shared data file {SHARED_SP500} not present (needs the shared checkout)")
    return SHARED_SP500


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (free port) for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request) -> Iterator:
    """(boto3 client, bucket name) with fake AWS credentials in the environment."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = "qr-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


class _CountingFile:
    """File-like wrapper that adds every byte read to a shared counter."""

    def __init__(self, raw, counter: dict[str, int]):
        self._raw, self._counter = raw, counter
        self.closed = False

    def read(self, nbytes: int = -1) -> bytes:
        data = self._raw.read() if nbytes is None or nbytes < 0 else self._raw.read(nbytes)
        self._counter["bytes"] += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._raw.seek(pos, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def size(self) -> int:
        return self._raw.size()

    def close(self) -> None:
        self.closed = True
        self._raw.close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


class CountingHandler(pafs.FileSystemHandler):
    """A local filesystem that counts the bytes read through it."""

    def __init__(self) -> None:
        self.fs = pafs.LocalFileSystem()
        self.counter = {"bytes": 0}

    def get_type_name(self):
        return "counting"

    def equals(self, other):
        return other is self

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def normalize_path(self, path):
        return path

    def open_input_file(self, path):
        return pa.PythonFile(_CountingFile(self.fs.open_input_file(path), self.counter), mode="r")

    def open_input_stream(self, path):
        return self.open_input_file(path)

    def create_dir(self, path, recursive):  # read-only test filesystem
        raise NotImplementedError

    delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = create_dir
    move = copy_file = open_output_stream = open_append_stream = create_dir


@pytest.fixture
def counting_fs() -> CountingHandler:
    return CountingHandler()


@pytest.fixture
def bars() -> Callable[..., pd.DataFrame]:
    """Factory: bars(symbols=("AAA", "BBB"), n=40, seed=0) -> clean long bars frame."""
    return make_bars


@pytest.fixture
def lob() -> Callable[..., pd.DataFrame]:
    """Factory: lob(symbols=("AAA",), n=30, levels=2) -> clean long LOB frame."""
    return make_lob
