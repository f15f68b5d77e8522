"""Fail-fast dataset check: open the dataset and read only its `symbol` column.

Parquet files (or a directory of them) and CSV files (optionally .gz) are read with
pyarrow; results are cached per (uri, size, mtime), so polling clients re-submitting the
same dataset do not re-read it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from data.storage import resolve_uri

SYMBOL_COLUMN = "symbol"


class DatasetProbe:
    """Reads the distinct symbols of a dataset URI; thread-safe, bounded cache."""

    def __init__(self, cache_entries: int = 32) -> None:
        self._cache: OrderedDict[tuple[str, int, int], frozenset[str]] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_entries = cache_entries

    def symbols(self, uri: str) -> frozenset[str]:
        """Distinct symbols of `uri`; FileNotFoundError / ValueError say what is wrong."""
        fs, path = resolve_uri(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError("no such file or directory")
        key = (uri, int(info.size or 0), int(info.mtime_ns or 0))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        column = _read_symbol_column(fs, path, info.type)
        found = frozenset(str(s) for s in pc.unique(column).to_pylist() if s is not None)
        with self._lock:
            self._cache[key] = found
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)
        return found


def _read_symbol_column(fs: pafs.FileSystem, path: str, kind: pafs.FileType) -> pa.ChunkedArray:
    lower = path.lower()
    try:
        if kind == pafs.FileType.Directory:
            table = pads.dataset(path, filesystem=fs, format="parquet").to_table(
                columns=[SYMBOL_COLUMN]
            )
        elif lower.endswith((".parquet", ".pq")):
            table = pq.read_table(path, filesystem=fs, columns=[SYMBOL_COLUMN])
        elif lower.endswith((".csv", ".csv.gz")):
            compression = "gzip" if lower.endswith(".gz") else None
            with fs.open_input_stream(path, compression=compression) as stream:
                table = pacsv.read_csv(
                    stream,
                    convert_options=pacsv.ConvertOptions(
                        include_columns=[SYMBOL_COLUMN],
                        column_types={SYMBOL_COLUMN: pa.string()},
                    ),
                )
        else:
            raise ValueError("unknown file type: use .parquet, .csv, .csv.gz or a directory")
    except (pa.ArrowInvalid, KeyError) as exc:
        raise ValueError(f"no readable {SYMBOL_COLUMN!r} column ({exc})") from None
    if SYMBOL_COLUMN not in table.column_names:
        raise ValueError(f"no {SYMBOL_COLUMN!r} column")
    return table.column(SYMBOL_COLUMN)
