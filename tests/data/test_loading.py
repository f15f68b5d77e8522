"""data.loading: CSV/Parquet/dataset/S3 reads, filters with pushdown, column checks, LOB."""

from __future__ import annotations

import gzip
import re

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from data import loading
from data.loading import build_filter, list_symbols, load_bars, load_lob
from data.validation import BAR_COLUMNS, DataValidationError, validate_bars

SYMS = tuple(f"S{i:02d}" for i in range(10))


def test_csv_and_parquet_load_identically(bars, write_frame):
    df = bars(("BBB", "AAA"), n=25)
    from_csv = load_bars(write_frame(df, "csv"))
    from_parquet = load_bars(write_frame(df, "parquet"))
    pd.testing.assert_frame_equal(from_csv, from_parquet)
    assert list(from_csv.columns) == list(BAR_COLUMNS)
    assert from_csv["date"].dtype == "datetime64[ns]"
    assert from_csv["symbol"].tolist()[:1] == ["AAA"]  # sorted by (symbol, date)
    expected = df.sort_values(["symbol", "date"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(from_parquet, expected, check_dtype=False)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_symbol_and_inclusive_date_filters(bars, write_frame, fmt):
    df = bars(("AAA", "BBB", "CCC"), n=30)
    out = load_bars(write_frame(df, fmt), symbols=["CCC", "AAA"], start="2020-01-03",
                    end="2020-01-10")
    assert sorted(out["symbol"].unique()) == ["AAA", "CCC"]
    assert out["date"].min() == pd.Timestamp("2020-01-03")
    assert out["date"].max() == pd.Timestamp("2020-01-10")  # end is inclusive
    assert len(out) == 2 * 6  # business days 3rd..10th


def test_symbol_filter_is_pushed_down_to_row_groups(bars, write_frame, counting_fs, monkeypatch):
    # one row group per symbol, so statistics on `symbol` can exclude 9 of 10 groups
    n = 2000
    path = write_frame(bars(SYMS, n=n), "parquet", row_group_size=n)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == len(SYMS)
    group_bytes = [
        sum(meta.row_group(i).column(j).total_compressed_size for j in range(meta.num_columns))
        for i in range(meta.num_row_groups)
    ]

    fs = pafs.PyFileSystem(counting_fs)
    monkeypatch.setattr(loading, "resolve_uri", lambda uri: (fs, path))
    full = load_bars(path)
    full_bytes = counting_fs.counter["bytes"]
    counting_fs.counter["bytes"] = 0
    one = load_bars(path, symbols=["S03"])
    one_bytes = counting_fs.counter["bytes"]

    assert one["symbol"].unique().tolist() == ["S03"]
    pd.testing.assert_frame_equal(one, full[full["symbol"] == "S03"].reset_index(drop=True))
    # both reads pay the same footer reads; beyond them, the filtered read fetched one row
    # group's pages where the full read fetched all ten
    footer = full_bytes - sum(group_bytes)
    assert one_bytes - footer < 1.5 * max(group_bytes), (one_bytes, footer, group_bytes)
    assert one_bytes < 0.4 * full_bytes


def test_filter_expression_prunes_row_groups_by_statistics(bars, write_frame):
    path = write_frame(bars(SYMS, n=100), "parquet", row_group_size=100)
    fragment = next(ds.dataset(path, format="parquet").get_fragments())
    schema = fragment.physical_schema
    by_symbol = build_filter(schema, "date", ["S02", "S07"], None, None)
    assert len(fragment.split_by_row_group(by_symbol)) == 2
    lo, hi = pd.Timestamp("2020-01-01"), pd.Timestamp("2020-01-02")
    assert len(fragment.split_by_row_group(build_filter(schema, "date", ["S02"], lo, hi))) == 1
    assert build_filter(schema, "date", None, None, None) is None


@pytest.mark.parametrize("kind", ["date32", "tz", "string"])
def test_date_filters_on_other_time_column_types(bars, tmp_path, kind):
    df = bars(("AAA",), n=10)
    table = pa.Table.from_pandas(df, preserve_index=False)
    dates = {
        "date32": pa.array(df["date"].dt.date, pa.date32()),
        "tz": pa.array(df["date"].dt.tz_localize("UTC"), pa.timestamp("ms", tz="UTC")),
        "string": pa.array(df["date"].dt.strftime("%Y-%m-%d")),
    }[kind]
    table = table.set_column(1, "date", dates)
    pq.write_table(table, tmp_path / "b.parquet")
    out = load_bars(str(tmp_path / "b.parquet"), start="2020-01-02", end="2020-01-06")
    assert out["date"].dtype == "datetime64[ns]"
    assert out["date"].dt.strftime("%Y-%m-%d").tolist() == [
        "2020-01-02", "2020-01-03", "2020-01-06"
    ]


def test_directory_dataset_with_hive_partitions(bars, tmp_path):
    df = bars(("AAA", "BBB", "CCC"), n=12)
    for symbol, part in df.groupby("symbol"):
        (tmp_path / f"symbol={symbol}").mkdir()
        pq.write_table(
            pa.Table.from_pandas(part.drop(columns="symbol"), preserve_index=False),
            tmp_path / f"symbol={symbol}" / "part-0.parquet",
        )
    out = load_bars(str(tmp_path), symbols=["BBB"])
    assert out["symbol"].unique().tolist() == ["BBB"] and len(out) == 12
    assert list_symbols(str(tmp_path)) == ["AAA", "BBB", "CCC"]


def _write_hive(df, root, *keys):
    for values, part in df.groupby(list(keys)):
        folder = root.joinpath(*(f"{k}={v}" for k, v in zip(keys, values, strict=True)))
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(part.drop(columns=list(keys)), preserve_index=False),
                       folder / "part-0.parquet")


def test_numeric_looking_hive_symbols_stay_text(bars, tmp_path):
    """Every `symbol=` partition looks like a number (Hong Kong, Tokyo tickers): Arrow would
    read 0700 as the integer 700. Nested keys (year=) keep working."""
    df = bars(("0700", "9988"), n=12)
    _write_hive(df, tmp_path / "hk", "symbol")
    assert list_symbols(str(tmp_path / "hk")) == ["0700", "9988"]
    out = load_bars(str(tmp_path / "hk"), symbols=["0700"])
    assert out["symbol"].unique().tolist() == ["0700"] and len(out) == 12
    nested = df.assign(year=df["date"].dt.year)
    _write_hive(nested, tmp_path / "nested", "symbol", "year")
    assert list_symbols(str(tmp_path / "nested")) == ["0700", "9988"]
    assert len(load_bars(str(tmp_path / "nested"))) == 24


def test_a_symbol_folder_holding_another_symbols_rows_is_refused(bars, tmp_path):
    """Files that keep their own `symbol` column in `symbol=X/` folders: Arrow reads the
    folder's X in place of the column, so BBB's rows filed under symbol=AAA trained as
    AAA. Files that agree with their folder read as before."""
    df = bars(("AAA", "BBB"), n=6)
    for symbol in ("AAA", "BBB"):
        (tmp_path / f"symbol={symbol}").mkdir()
        df[df["symbol"] == symbol].to_parquet(tmp_path / f"symbol={symbol}" / "part-0.parquet")
    assert list_symbols(str(tmp_path)) == ["AAA", "BBB"]
    assert len(load_bars(str(tmp_path), symbols=["AAA"])) == 6
    df[df["symbol"] == "BBB"].to_parquet(tmp_path / "symbol=AAA" / "part-1.parquet")
    for call in (lambda p: load_bars(p, symbols=["AAA"]), list_symbols):
        with pytest.raises(DataValidationError, match=re.escape(
                f"{tmp_path / 'symbol=AAA' / 'part-1.parquet'} is in the folder symbol=AAA, but "
                "its own 'symbol' column holds ['BBB']: the folder's name would relabel its "
                "rows; move the file to its symbol's folder")):
            call(str(tmp_path))


def test_symbol_folders_whose_files_keep_an_integer_symbol_column_are_refused(bars, tmp_path):
    """`symbol=0700/` folders of files with their own integer `symbol` column: Arrow cannot
    merge the two types (a traceback before)."""
    for folder, code in (("0700", 700), ("9988", 9988)):
        (tmp_path / f"symbol={folder}").mkdir()
        bars((str(code),), n=5).assign(symbol=code).to_parquet(
            tmp_path / f"symbol={folder}" / "part-0.parquet")
    with pytest.raises(ValueError, match=r"not a readable Parquet file or dataset \(Unable to "
                       r"merge: Field symbol has incompatible types.*; a column is both in the "
                       r"files and in the folder names \(key=value\): write the files without"):
        list_symbols(str(tmp_path))


def test_integer_symbol_column_in_parquet_reads_as_text(bars, tmp_path):
    """Numeric codes (7203, 600519) stored as an integer column: symbols are text, as from
    CSV, and a symbol filter matches the code as the column spells it."""
    df = bars(("AAA", "BBB"), n=6)
    df["symbol"] = df["symbol"].map({"AAA": 7203, "BBB": 600519}).astype("int64")
    df.to_parquet(tmp_path / "jp.parquet")
    df.to_csv(tmp_path / "jp.csv", index=False)
    for name in ("jp.parquet", "jp.csv"):
        uri = str(tmp_path / name)
        assert list_symbols(uri) == ["600519", "7203"]
        out = load_bars(uri, symbols=["7203"])
        assert out["symbol"].tolist() == ["7203"] * 6
        assert load_bars(uri)["symbol"].tolist() == ["600519"] * 6 + ["7203"] * 6
        with pytest.raises(ValueError, match=r"no rows for symbols \['07203'\]"):
            load_bars(uri, symbols=["07203"])


def test_files_that_disagree_on_a_column_type_are_named(bars, tmp_path):
    df = bars(("AAA", "BBB"), n=12)
    (tmp_path / "d").mkdir()
    df[df.symbol == "AAA"].astype({"volume": "int64"}).to_parquet(tmp_path / "d" / "a.parquet")
    df[df.symbol == "BBB"].assign(volume=lambda f: f.volume + 0.5).to_parquet(
        tmp_path / "d" / "b.parquet")
    with pytest.raises(ValueError, match=r"disagree on column 'volume': int64 in .*a\.parquet"):
        load_bars(str(tmp_path / "d"))


def test_csv_tickers_that_read_as_missing_values_stay_tickers(bars, tmp_path):
    """NA (National Bank of Canada), NULL and N/A are tickers in a symbol column; the other
    columns keep pandas' missing-value strings, and an empty symbol is still missing."""
    df = bars(("NA", "NULL", "N/A"), n=6).astype({"close": object})
    df.loc[2, "close"] = "NA"
    df.to_csv(tmp_path / "b.csv", index=False)
    assert list_symbols(str(tmp_path / "b.csv")) == ["N/A", "NA", "NULL"]
    out = load_bars(str(tmp_path / "b.csv"), symbols=["NA"])
    assert len(out) == 6 and out["close"].isna().sum() == 1
    with open(tmp_path / "b.csv", "a") as f:
        f.write(",2021-01-01,1,1,1,1,1\n")
    with pytest.raises(DataValidationError, match="no symbol"):
        validate_bars(load_bars(str(tmp_path / "b.csv")))


@pytest.mark.parametrize("fmt", ["csv", "parquet-strings"])
def test_dates_with_daylight_saving_offsets_become_utc(bars, tmp_path, fmt):
    """A zone with daylight saving writes two UTC offsets into one file (-05:00 in winter,
    -04:00 in summer); both parse, to naive UTC."""
    df = bars(("AAA",), n=3)
    df["date"] = ["2018-01-02 16:00:00-05:00", "2018-07-02 16:00:00-04:00",
                  "2018-07-03 16:00:00-04:00"]
    if fmt == "csv":
        df.to_csv(tmp_path / "f.csv", index=False)
        path = tmp_path / "f.csv"
    else:
        df.to_parquet(tmp_path / "f.parquet")
        path = tmp_path / "f.parquet"
    out = load_bars(str(path))
    assert out["date"].tolist() == [pd.Timestamp("2018-01-02 21:00"),
                                    pd.Timestamp("2018-07-02 20:00"),
                                    pd.Timestamp("2018-07-03 20:00")]


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/New_York", "UTC"])
@pytest.mark.parametrize("fmt", ["parquet-zoned", "csv"])
def test_zoned_daily_bars_at_local_midnight_keep_their_dates(bars, tmp_path, zone, fmt):
    """Daily bars stamped at midnight in their zone keep their local dates, and a window
    selects them by those dates: in UTC, Tokyo's 2018-02-01 was 2018-01-31 15:00 (the bar
    of 2018-02-01 fell out of a window starting then), New York's 05:00 or 04:00. The CSV
    spans a daylight-saving change, so its offsets differ (-05:00, -04:00)."""
    df = bars(("AAA",), n=40)
    days = pd.bdate_range("2018-02-26", periods=40)
    df["date"] = days.tz_localize(zone)
    if fmt == "csv":
        df["date"] = [t.isoformat() for t in df["date"]]
        df.to_csv(path := tmp_path / "f.csv", index=False)
    else:
        df.to_parquet(path := tmp_path / "f.parquet")
    out = load_bars(str(path))
    assert out["date"].tolist() == list(days)
    window = load_bars(str(path), start="2018-03-05", end="2018-03-13")
    assert window["date"].tolist() == list(days[(days >= "2018-03-05") & (days <= "2018-03-13")])


def _zoned(df: pd.DataFrame, times, fmt: str, tmp_path) -> str:
    """`df` with `times` (tz-aware) as its dates, written as Parquet (zoned timestamps) or
    as a CSV of ISO times with their offsets."""
    df = df.assign(date=list(times))
    if fmt == "csv":
        df["date"] = [t.isoformat() for t in df["date"]]
        df.to_csv(path := tmp_path / "f.csv", index=False)
    else:
        df.to_parquet(path := tmp_path / "f.parquet")
    return str(path)


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/New_York"])
@pytest.mark.parametrize("fmt", ["parquet-zoned", "csv"])
def test_a_time_of_day_among_zoned_daily_bars_is_refused_by_name(bars, tmp_path, zone, fmt):
    """Daily bars at local midnight and one live bar at 14:35: the whole column was read
    as UTC, every Tokyo date moving back to the day before, silently. Now the odd row is
    named, with its symbol; another symbol's midnight bars do not hide it."""
    df = bars(("AAA", "BBB"), n=40)
    days = pd.bdate_range("2018-02-26", periods=40).tz_localize(zone)
    times = days.append(days)
    live = times[-1] + pd.Timedelta(hours=14, minutes=35)
    path = _zoned(df, times[:-1].append(pd.DatetimeIndex([live])), fmt, tmp_path)
    with pytest.raises(DataValidationError) as err:
        load_bars(path)
    message = str(err.value)
    assert message.startswith(f"{path}: column 'date' holds daily bars stamped at midnight in "
                              "their zone (e.g. ")
    assert (f"and 1 time of the same symbol that is not: symbol 'BBB' at "
            f"'{live.isoformat(sep=' ' if fmt != 'csv' else 'T')}' (a live, partial bar?)"
            ) in message
    assert "remove them at the source" in message and err.value.rows == [79]


def test_zoned_daily_and_intraday_symbols_are_read_each_their_way(bars, tmp_path):
    """A daily symbol at local midnight keeps its dates beside an intraday symbol in the
    same file, whose times (one at midnight each day: 24-hour bars) are UTC; so do daily
    bars at 00:00 UTC written in London time (00:00 in winter, 01:00 in summer)."""
    days = pd.bdate_range("2021-03-22", periods=24)
    hours = pd.date_range("2021-03-22", periods=24, freq="h", tz="Asia/Tokyo")
    london = days.tz_localize("UTC").tz_convert("Europe/London")  # summer time from 03-28
    df = bars(("DAY", "HOUR", "LDN"), n=24)
    path = _zoned(df, days.tz_localize("Asia/Tokyo").append(hours).append(london), "parquet",
                  tmp_path)
    out = load_bars(path)
    assert out.loc[out["symbol"] == "DAY", "date"].tolist() == list(days)
    assert out.loc[out["symbol"] == "HOUR", "date"].tolist() == list(
        hours.tz_convert("UTC").tz_localize(None))
    assert out.loc[out["symbol"] == "LDN", "date"].tolist() == list(days)


def test_daily_bars_at_utc_midnight_in_london_time_stay_utc_through_the_winter(bars,
                                                                              tmp_path):
    """00:00 UTC written in London time is local midnight in winter, 01:00 in summer: a
    file mostly in winter is mostly at local midnight, and was refused as daily bars with
    live bars among them; its times all at one UTC time of day make them UTC dates."""
    days = pd.bdate_range("2021-01-04", "2021-04-09")  # summer time from 03-28
    df = bars(("LDN",), n=len(days))
    path = _zoned(df, days.tz_localize("UTC").tz_convert("Europe/London"), "parquet",
                  tmp_path)
    assert load_bars(path)["date"].tolist() == list(days)


@pytest.mark.parametrize("fmt", ["parquet-zoned", "csv"])
def test_a_utc_column_has_no_local_date_to_decide(bars, tmp_path, fmt):
    """Times zoned UTC are their own local times: daily bars at 00:00 UTC and one at 09:00
    load as they are (as the same times without a zone do), not refused as a live bar."""
    days = pd.bdate_range("2021-01-04", periods=30)
    times = days[:-1].append(pd.DatetimeIndex([days[-1] + pd.Timedelta(hours=9)]))
    path = _zoned(bars(("AAA",), n=30), times.tz_localize("UTC"), fmt, tmp_path)
    assert load_bars(path)["date"].tolist() == list(times)


def test_another_symbols_live_bar_in_a_csv_does_not_refuse_the_symbols_asked_for(bars,
                                                                                  tmp_path):
    """A CSV is read whole: LIVE's odd bar among its Tokyo midnights refused GOOD too,
    though a Parquet file's pushdown left LIVE out (and a job's chunk, retried a symbol at
    a time, failed every symbol). Only the symbols asked for are judged."""
    days = pd.bdate_range("2018-02-26", periods=40).tz_localize("Asia/Tokyo")
    live = days[-1] + pd.Timedelta(hours=14, minutes=35)
    path = _zoned(bars(("GOOD", "LIVE"), n=40), days.append(days[:-1]).append(
        pd.DatetimeIndex([live])), "csv", tmp_path)
    good = load_bars(path, symbols=["GOOD"])
    assert good["date"].tolist() == list(days.tz_localize(None))
    for symbols in (["LIVE"], ["GOOD", "LIVE"], None):
        with pytest.raises(DataValidationError, match="symbol 'LIVE' at '2018-04-20T14:35"):
            load_bars(path, symbols=symbols)


def test_iso_strings_mixing_dates_and_datetimes_parse(bars, tmp_path):
    """ISO times whose midnights are written as plain dates (2021-01-05 beside
    2021-01-05 09:35:00) are dates, though pandas infers one format from the first."""
    df = bars(("AAA",), n=4)
    df["date"] = ["2021-01-04 15:55:00", "2021-01-05", "2021-01-05 09:35:00",
                  "2021-01-05T09:40:00"]
    df.to_csv(tmp_path / "f.csv", index=False)
    out = load_bars(str(tmp_path / "f.csv"))
    assert out["date"].tolist() == [pd.Timestamp("2021-01-04 15:55"), pd.Timestamp("2021-01-05"),
                                    pd.Timestamp("2021-01-05 09:35"),
                                    pd.Timestamp("2021-01-05 09:40")]


def _dated_csv(bars, tmp_path, dates: list[str], name: str = "f") -> str:
    df = bars(("AAA",), n=len(dates))
    df["date"] = dates
    path = tmp_path / f"{name}.csv"
    df.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("fmt", ["%d/%m/%Y %H:%M", "%d.%m.%Y", "%d-%m-%Y", "%d/%m/%y"])
def test_dates_that_read_day_or_month_first_are_refused(bars, tmp_path, fmt):
    """Day-first times (a European export, 01/03/2021 09:30 .. 12/03/2021) whose days are
    all 12 or less read month-first, silently: 3 January .. 3 December. Such a column is
    refused, naming the file, the column, a value, both readings and the fix."""
    days = pd.bdate_range("2021-03-01", "2021-03-12") + pd.Timedelta(hours=9, minutes=30)
    path = _dated_csv(bars, tmp_path, list(days.strftime(fmt)))
    first = days[0].strftime(fmt)
    with pytest.raises(DataValidationError) as err:
        load_bars(path)
    message = str(err.value)
    assert message.startswith(f"{path}: column 'date' holds dates written with the day and "
                              f"month first (e.g. {first!r} at row 0: ")
    assert "2021-03-01 day-first, 2021-01-03 month-first" in message
    assert ("write ISO dates (2021-03-01, 2021-03-01 09:30) at the source, or convert the "
            "column in pandas first: df['date'] = pd.to_datetime(df['date'], dayfirst=True) "
            "if the day comes first") in message


def test_a_day_over_12_proves_the_order_of_the_whole_column(bars, tmp_path):
    """One value with a first field over 12 makes a column day-first (it was refused as
    not dates, or read month-first up to it); one with a second field over 12 month-first
    (read as before); both in one column are refused."""
    days = pd.bdate_range("2021-03-08", "2021-03-19")
    want = list(days)
    for fmt in ("%d/%m/%Y", "%d.%m.%Y", "%m/%d/%Y", "%m/%d/%y"):
        path = _dated_csv(bars, tmp_path, list(days.strftime(fmt)))
        assert load_bars(path)["date"].tolist() == want, fmt
    timed = days[4:7] + pd.Timedelta(hours=15, minutes=30)  # 12, 15 and 16 March
    path = _dated_csv(bars, tmp_path, list(timed.strftime("%d/%m/%Y %H:%M:%S")))
    assert load_bars(path)["date"].tolist() == list(timed)
    mixed = ["08/03/2021", "15/03/2021", "03/16/2021"]
    with pytest.raises(DataValidationError, match=re.escape(
            "holds dates written with the day first (e.g. '15/03/2021' at row 1) and dates "
            "written with the month first (e.g. '03/16/2021' at row 2)")):
        load_bars(_dated_csv(bars, tmp_path, mixed))


def test_a_two_digit_year_that_may_come_first_is_refused(bars, tmp_path):
    """21/03/15 is 21 March 2015 day-first or 15 March 2021 year-first: refused."""
    with pytest.raises(DataValidationError, match=re.escape(
            "holds dates with a two-digit year (e.g. '21/03/15' at row 0) whose first field "
            "is over 12 in some rows: day first (dd/mm/yy) or year first (yy/mm/dd)")):
        load_bars(_dated_csv(bars, tmp_path, ["21/03/15", "22/03/15"]))


@pytest.mark.parametrize("second", ["2018-07-03 16:00:00", "2018-07-03"])
def test_times_with_and_without_utc_offsets_mixed_are_refused(bars, tmp_path, second):
    """A time without an offset beside times with one is in an unknown zone: the load
    fails naming both kinds, instead of reading it as UTC."""
    df = bars(("AAA",), n=3)
    df["date"] = ["2018-01-02 16:00:00-05:00", "2018-07-02 16:00:00-04:00", second]
    df.to_csv(tmp_path / "f.csv", index=False)
    with pytest.raises(DataValidationError, match=r"mixes times with a UTC offset .*"
                       rf"'{second}' at row 2\); write every time with its offset"):
        load_bars(str(tmp_path / "f.csv"))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_time_of_day_in_its_own_column_is_refused_with_the_join(bars, tmp_path, fmt):
    """`date, time` vendor files: reading `date` alone would give a day's bars one time;
    the error says how to join the columns. A daily file with a stray time column loads."""
    df = bars(("AAA",), n=4)
    df["date"] = ["2021-01-04", "2021-01-04", "2021-01-05", "2021-01-05"]
    df.insert(2, "Time", ["09:30", "09:35", "09:30", "09:35"])
    path = tmp_path / f"f.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    with pytest.raises(DataValidationError, match=r"dates repeat within a symbol and the file "
                       r"has a separate 'Time' column, which is not read.*combine"):
        load_bars(str(path))
    df["date"] = ["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-07"]
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    assert len(load_bars(str(path))) == 4


def test_categorical_symbol_column_loads_as_strings(bars, tmp_path, recwarn):
    df = bars(("AAA", "BBB"), n=5).astype({"symbol": "category"})
    path = tmp_path / "cat.parquet"
    df.to_parquet(path)
    frame = load_bars(str(path), symbols=["BBB"])
    assert frame["symbol"].dtype == object and frame["symbol"].unique().tolist() == ["BBB"]
    clean, _ = validate_bars(df)
    assert clean["symbol"].dtype == object
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize("name", ["b.csv.gz", "B.CSV.GZ"])
def test_gzipped_csv(bars, tmp_path, name):
    """Any case of the suffix: the submit check accepts `DATA.CSV.GZ`, and the loader read it
    as plain text (pyarrow's compression "detect" knows `.gz` only)."""
    df = bars(("AAA",), n=5)
    with gzip.open(tmp_path / name, "wt") as f:
        df.to_csv(f, index=False)
    pd.testing.assert_frame_equal(load_bars(str(tmp_path / name)), df, check_dtype=False)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_misnamed_columns_error_lists_missing_found_and_renames(bars, write_frame, fmt):
    df = bars(("AAA",), n=5).rename(columns={"close": "Close", "volume": " volume"})
    path = write_frame(df.drop(columns="high"), fmt)
    with pytest.raises(DataValidationError) as err:
        load_bars(path)
    msg = str(err.value)
    assert "missing columns ['high', 'close', 'volume']" in msg
    assert "found ['symbol', 'date', 'open', 'low', 'Close', ' volume']" in msg
    assert "'Close' -> 'close'" in msg and "' volume' -> 'volume'" in msg
    assert path in msg


@pytest.mark.parametrize("sep", [";", "\t"])
def test_csv_with_another_separator_is_named_in_the_error(bars, tmp_path, sep):
    """A semicolon- (European spreadsheet) or tab-separated file reads as one column: the
    error says the file must be comma-separated."""
    bars(("AAA",), n=5).to_csv(tmp_path / "f.csv", index=False, sep=sep)
    for call in (load_bars, lambda uri: list_symbols(uri, "bars")):
        with pytest.raises(DataValidationError, match=re.escape(
                f"the header is one column holding {sep!r}: a CSV file must be comma-separated")):
            call(str(tmp_path / "f.csv"))


def test_missing_file_and_unknown_type_name_the_uri(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        load_bars(str(tmp_path / "nope.parquet"))
    (tmp_path / "bars.txt").write_text("x")
    with pytest.raises(ValueError, match="bars.txt: unknown file type"):
        load_bars(str(tmp_path / "bars.txt"))


def test_directory_of_csv_files_says_how_to_read_them(bars, tmp_path):
    """A directory is a Parquet dataset; CSV files in it get the fix, not Parquet's
    "magic bytes not found"."""
    (tmp_path / "daily" / "2020").mkdir(parents=True)
    bars(("AAA",), n=5).to_csv(tmp_path / "daily" / "2020" / "AAA.csv.gz", index=False)
    for call in (load_bars, list_symbols):
        with pytest.raises(ValueError, match=r"daily: a directory is read as a Parquet dataset"
                           r", and it holds CSV files \(e.g. 2020/AAA.csv.gz\).*concatenate"):
            call(str(tmp_path / "daily"))


@pytest.mark.parametrize("stray", ["README.md", "0notes.txt", "AAA.csv"])
def test_a_file_that_is_not_parquet_in_a_parquet_directory_is_named(bars, tmp_path, stray):
    """A README (sorted after the Parquet files, or before them: then the dataset cannot
    even be made) or a CSV copy beside per-symbol Parquet files: the error named no file
    (`Parquet file size is 6 bytes ...`), and said nothing of what to do."""
    df = bars(("AAA", "BBB"), n=5)
    for symbol, part in df.groupby("symbol"):
        part.to_parquet(tmp_path / f"{symbol}.parquet")
    (tmp_path / stray).write_text("hello\n")
    for call in (load_bars, list_symbols):
        with pytest.raises(ValueError, match=rf"the directory is read as a Parquet dataset, and "
                           rf"{re.escape(str(tmp_path / stray))} is not Parquet: move it out of "
                           r"the directory \(or start the name with '_' or '\.'"):
            call(str(tmp_path))
    (tmp_path / stray).rename(tmp_path / f"_{stray}")  # as the message says: skipped
    assert list_symbols(str(tmp_path)) == ["AAA", "BBB"]


def test_bad_filter_arguments(bars, write_frame):
    path = write_frame(bars(("AAA",), n=5), "parquet")
    with pytest.raises(ValueError, match=r"no rows for symbols \['ZZZ'\]"):
        load_bars(path, symbols=["AAA", "ZZZ"])
    with pytest.raises(TypeError, match="list of tickers"):
        load_bars(path, symbols="AAA")
    with pytest.raises(ValueError, match="is after end"):
        load_bars(path, start="2020-02-01", end="2020-01-01")
    with pytest.raises(ValueError, match="start='soon' is not a date"):
        load_bars(path, start="soon")
    with pytest.raises(ValueError, match=f"{path}: the file has no rows between 2030"):
        load_bars(path, start="2030-01-01", end="2030-02-01")
    first, last = (str(d.date()) for d in bars(("AAA",), n=5)["date"].iloc[[0, -1]])
    # one bound only: no "and None"; the rows' own span is named
    with pytest.raises(ValueError, match=rf"no rows for symbols \['AAA'\] from 2030-01-01 on "
                       rf"\(their rows run from {first} to {last}\)"):  # fmt: skip
        load_bars(path, symbols=["AAA"], start="2030-01-01")
    with pytest.raises(ValueError, match=rf"no rows up to 1999-01-01 \(its rows run from "
                       rf"{first} to {last}\)"):  # fmt: skip
        load_bars(path, end="1999-01-01")
    empty = write_frame(bars(("AAA",), n=5).iloc[:0], "csv", name="empty")
    with pytest.raises(ValueError, match=f"{empty}: the file has no rows;"):
        load_bars(empty)


def test_list_symbols_reads_only_the_symbol_column(bars, write_frame, tmp_path):
    df = bars(("CCC", "AAA", "BBB"), n=3)
    assert list_symbols(write_frame(df, "parquet")) == ["AAA", "BBB", "CCC"]
    # a CSV holding nothing but symbols is enough: no other column is needed
    df[["symbol"]].to_csv(tmp_path / "only.csv", index=False)
    assert list_symbols(str(tmp_path / "only.csv")) == ["AAA", "BBB", "CCC"]
    with pytest.raises(DataValidationError, match="missing columns"):
        list_symbols(write_frame(df.drop(columns="symbol"), "csv", name="nosym"))


def test_sample_dataset_loads_from_the_package():
    out = load_bars("sample:sp500", symbols=["AAPL"], start="2018-01-01")
    assert out["symbol"].unique().tolist() == ["AAPL"]
    assert out["date"].max() == pd.Timestamp("2018-02-07")
    assert len(list_symbols("sample:sp500")) == 102


def test_load_bars_from_s3(bars, s3_bucket, moto_endpoint, tmp_path):
    client, bucket = s3_bucket
    df = bars(("AAA", "BBB"), n=20)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "b.parquet")
    client.upload_file(str(tmp_path / "b.parquet"), bucket, "data/bars.parquet")
    uri = f"s3://{bucket}/data/bars.parquet?endpoint_override={moto_endpoint}&region=us-east-1"
    out = load_bars(uri, symbols=["BBB"], end="2020-01-07")
    expected = df[(df["symbol"] == "BBB") & (df["date"] <= "2020-01-07")]
    pd.testing.assert_frame_equal(out, expected.reset_index(drop=True), check_dtype=False)
    assert list_symbols(uri) == ["AAA", "BBB"]
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        load_bars(uri.replace("bars.parquet", "missing.parquet"))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_load_lob_detects_levels_and_orders_columns(lob, write_frame, fmt):
    df = lob(("AAA", "BBB"), n=10, levels=3)
    shuffled = df[list(reversed(df.columns))]
    out = load_lob(write_frame(shuffled, fmt), symbols=["BBB"])
    expected_cols = ["symbol", "ts"] + [
        f"{fam}_{k}" for fam in ("ask_price", "ask_size", "bid_price", "bid_size")
        for k in (1, 2, 3)
    ]
    assert list(out.columns) == expected_cols
    assert out["symbol"].unique().tolist() == ["BBB"] and len(out) == 10


def test_load_lob_date_only_end_covers_the_whole_day(lob, write_frame):
    path = write_frame(lob(("AAA",), n=20), "parquet")
    assert len(load_lob(path, end="2021-03-01")) == 20  # snapshots at 09:30 on that day
    assert len(load_lob(path, end="2021-03-01 09:30:04")) == 5  # inclusive timestamp


def test_load_lob_rejects_inconsistent_levels(lob, write_frame):
    df = lob(("AAA",), n=5, levels=2).drop(columns="bid_size_2")
    with pytest.raises(DataValidationError, match=r"missing columns \['bid_size_2'\]"):
        load_lob(write_frame(df, "parquet"))


@pytest.mark.parametrize("zone", ["EST", "JST", "CET"])
def test_times_with_a_zone_name_are_refused(bars, tmp_path, zone):
    """pandas drops a zone name it does not know (`09:30:00 EST`) and reads the clock time
    as UTC, hours off; the load refuses it, naming the column, the value and its row."""
    df = bars(("AAA",), n=3)
    df["date"] = [f"2021-01-0{d} 09:30:00 {zone}" for d in (4, 5, 6)]
    df.to_csv(tmp_path / "f.csv", index=False)
    with pytest.raises(DataValidationError, match=rf"column 'date' holds times with the zone "
                       rf"name '{zone}' \(e.g. '2021-01-04 09:30:00 {zone}' at row 0\), which is "
                       r"not read: .* write a UTC offset instead"):
        load_bars(str(tmp_path / "f.csv"))


def test_utc_and_gmt_zone_names_read_as_utc(bars, tmp_path):
    df = bars(("AAA",), n=2)
    df["date"] = ["2021-01-04 09:30:00 UTC", "2021-01-04 10:30:00 UTC"]
    df.to_csv(tmp_path / "f.csv", index=False)
    assert load_bars(str(tmp_path / "f.csv"))["date"].tolist() == [
        pd.Timestamp("2021-01-04 09:30"), pd.Timestamp("2021-01-04 10:30")]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_unknown_symbol_error_names_spellings_that_differ_by_case_or_spaces(
        bars, write_frame, fmt):
    """`MSFT` asked, ' MSFT' and 'msft' in the file: they look alike in a listing, so the
    error names them and says symbols match exactly."""
    df = bars(("AAA", " MSFT", "msft"), n=5)
    path = write_frame(df, fmt)
    with pytest.raises(ValueError, match=r"no rows for symbols \['MSFT'\]; the file spells "
                       r"' MSFT', 'msft': symbols match exactly, case and spaces included"):
        load_bars(path, symbols=["MSFT"])
    with pytest.raises(ValueError, match=r"no rows for symbols \['ZZZ'\]; list the available"):
        load_bars(path, symbols=["ZZZ"])


def test_csv_symbol_with_a_padded_twin_is_refused_when_asked_for(bars, tmp_path):
    """'AAA' asked, some of its rows spelled 'AAA ': loading 'AAA' alone would give part
    of its history (a job leaves the padded spelling out); the load refuses, naming it.
    Another symbol of the file loads."""
    df = bars(("AAA", "BBB"), n=30)
    df.loc[df.index[df["symbol"] == "AAA"][20:], "symbol"] = "AAA "
    df.to_csv(tmp_path / "f.csv", index=False)
    path = str(tmp_path / "f.csv")
    with pytest.raises(DataValidationError, match=r"f.csv: symbol 'AAA': some of its rows are "
                       r"spelled 'AAA ' \(with spaces\), so its history is split") as err:
        load_bars(path, symbols=["AAA", "BBB"])
    assert err.value.symbol == "AAA" and "on_error" not in str(err.value)
    assert len(load_bars(path, symbols=["BBB"])) == 30


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_symbol_with_a_padded_twin_is_refused_in_every_format(bars, write_frame, fmt):
    """Parquet pushed the exact spelling down and loaded 'AAA' with part of its history,
    silently, where CSV refused; both refuse now, and `split_spellings` names it for the
    callers that go on with the other symbols."""
    from data.loading import list_symbols, split_spellings

    df = bars(("AAA", "BBB"), n=30)
    df.loc[df.index[df["symbol"] == "AAA"][:20], "symbol"] = "AAA "
    path = write_frame(df, fmt)
    with pytest.raises(DataValidationError, match=r"symbol 'AAA': some of its rows are spelled "
                       r"'AAA ' \(with spaces\), so its history is split") as err:
        load_bars(path, symbols=["AAA"])
    assert err.value.symbol == "AAA"
    assert len(load_bars(path, symbols=["BBB"])) == 30
    assert list(split_spellings(list_symbols(path), ["AAA", "BBB"])) == ["AAA"]
    # a caller that checked once (a job's driver) skips the symbol-column read per chunk
    assert len(load_bars(path, symbols=["AAA"], check_spellings=False)) == 10


def test_binary_parquet_symbols_read_as_text(bars, tmp_path):
    """A `binary` symbol column (Spark/Hive without the UTF8 annotation) listed "b'AAA'"
    and matched no requested symbol."""
    from data.loading import list_symbols

    table = pa.Table.from_pandas(bars(("AAA", "BBB"), n=10), preserve_index=False)
    table = table.set_column(0, "symbol", table.column("symbol").cast(pa.binary()))
    pq.write_table(table, tmp_path / "f.parquet")
    path = str(tmp_path / "f.parquet")
    assert list_symbols(path) == ["AAA", "BBB"]
    frame = load_bars(path, symbols=["BBB"])
    assert frame["symbol"].tolist() == ["BBB"] * 10
    assert sorted(load_bars(path)["symbol"].unique()) == ["AAA", "BBB"]
    bad = table.set_column(0, "symbol", pa.array([b"\xff"] * 20, pa.binary()))
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(DataValidationError, match=r"column 'symbol' is binary and holds bytes "
                       r"that are not UTF-8 text \(e\.g\. b'\\xff'\)"):
        list_symbols(str(tmp_path / "bad.parquet"))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_row_without_a_symbol_is_named_by_its_file_row(bars, write_frame, fmt):
    """It was named by its position after the loader's sort (6294 for file row 7)."""
    df = bars(("BBB", "AAA"), n=10)
    df["symbol"] = df["symbol"].astype(object)
    df.loc[7, "symbol"] = None
    path = write_frame(df, fmt)
    with pytest.raises(DataValidationError, match=rf"^{re.escape(path)}: 1 row has no symbol "
                       r"\(row 7, dated 2020-01-10\); fill or remove it at the source"):
        load_bars(path)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_row_without_a_symbol_is_refused_when_symbols_are_asked_for(bars, write_frame, fmt):
    """The row may be a day of the symbol asked for: a read of some symbols trained them
    without it, silently (the Parquet pushdown filtered it out), while a read of all
    refused the file."""
    df = bars(("AAA", "BBB"), n=10)
    df["symbol"] = df["symbol"].astype(object)
    df.loc[3, "symbol"] = None
    path = write_frame(df, fmt)
    for symbols in (["AAA"], ["BBB"], None):
        with pytest.raises(DataValidationError, match=rf"^{re.escape(path)}: 1 row has no "
                           r"symbol \(row 3, dated 2020-01-06\); fill or remove it"):
            load_bars(path, symbols=symbols)
    df.loc[3, "symbol"] = "AAA"
    assert len(load_bars(write_frame(df, fmt), symbols=["AAA"])) == 10


@pytest.mark.parametrize("index", [["date"], ["symbol"], ["symbol", "date"]])
def test_a_parquet_frame_saved_with_its_index_loads(bars, tmp_path, index):
    """`df.set_index('date').to_parquet(...)`: the index is stored as a column, and
    `to_pandas` restored it as the index (KeyError: 'date', a traceback in the CLI)."""
    df = bars(("AAA", "BBB"), n=10)
    path = tmp_path / "indexed.parquet"
    df.set_index(index).to_parquet(path)
    out = load_bars(str(path), symbols=["BBB"])
    expected = df[df["symbol"] == "BBB"].reset_index(drop=True)
    pd.testing.assert_frame_equal(out[expected.columns], expected, check_dtype=False)
    assert list_symbols(str(path)) == ["AAA", "BBB"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_window_outside_a_symbols_rows_says_to_move_the_window(bars, write_frame, fmt):
    """The symbol exists: "list the available ones" pointed the wrong way."""
    path = write_frame(bars(("AAA",), n=10), fmt)
    with pytest.raises(ValueError) as err:
        load_bars(path, symbols=["AAA"], start="2030-01-01")
    assert str(err.value) == (f"{path}: no rows for symbols ['AAA'] from 2030-01-01 on (their "
                              "rows run from 2020-01-01 to 2020-01-14); choose start/end within "
                              "that span")
    with pytest.raises(ValueError) as err:
        load_bars(path, symbols=["AAA", "ZZZ"], start="2030-01-01")
    assert str(err.value).startswith(f"{path}: no rows for symbols ['ZZZ']; list the available "
                                     "ones with `quantray data inspect")
    assert "no rows for symbols ['AAA'] from 2030-01-01 on (their rows run" in str(err.value)


def test_a_directory_whose_files_type_the_date_differently_loads_with_a_window(bars, tmp_path):
    """Yearly exports from different tools: one file stores `date` as ISO text, the others
    as timestamps. The directory reads as one dataset, but a window's pushed-down
    comparison met the text file's own type (ArrowNotImplementedError, a traceback from
    `data inspect --start`): the window now gives the rows a read without it gives."""
    df = bars(("AAA", "BBB"), n=40)
    first, second = df[df["date"] < "2020-01-21"], df[df["date"] >= "2020-01-21"]
    root = tmp_path / "drift"
    root.mkdir()
    first.to_parquet(root / "part-1.parquet", index=False)
    second.assign(date=second["date"].dt.strftime("%Y-%m-%d")).to_parquet(
        root / "part-2.parquet", index=False)
    whole = load_bars(str(root))
    out = load_bars(str(root), symbols=["BBB"], start="2020-01-10", end="2020-02-05")
    expected = whole[(whole["symbol"] == "BBB") & whole["date"].between("2020-01-10",
                                                                        "2020-02-05")]
    assert len(expected) > 10 and expected["date"].max() >= pd.Timestamp("2020-01-21")
    pd.testing.assert_frame_equal(out.reset_index(drop=True), expected.reset_index(drop=True))
    # numbers (YYYYMMDD) in a file are no dates: refused naming the files, not read around
    second.assign(date=second["date"].dt.strftime("%Y%m%d").astype("int64")).to_parquet(
        root / "part-2.parquet", index=False)
    with pytest.raises(ValueError, match="the files disagree on column 'date'"):
        load_bars(str(root), start="2020-01-10", end="2020-02-05")


def test_a_plain_http_endpoint_named_without_its_scheme_is_told_how_to_name_it() -> None:
    """`endpoint_override=127.0.0.1:9000` makes pyarrow speak https to it; against a
    plain-http server (MinIO, moto) that fails with a raw TLS error. The error now says
    how to name a plain-http endpoint."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_plain_http() -> None:  # what a plain-http endpoint says to a TLS hello
        for _ in range(8):
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            conn.close()

    threading.Thread(target=answer_plain_http, daemon=True).start()
    uri = f"s3://bucket/bars.parquet?endpoint_override=127.0.0.1:{port}&region=us-east-1"
    try:
        with pytest.raises(OSError) as err:
            load_bars(uri)
    finally:
        server.close()
    assert f"write endpoint_override=http://127.0.0.1:{port} (or add &scheme=http)" in str(
        err.value), str(err.value)


def test_one_instant_written_in_two_offsets_keeps_each_rows_clock_time(tmp_path) -> None:
    """Times were worked out once per distinct instant: 23:00+00:00 (an hourly UTC symbol)
    and 00:00+01:00 (a Paris daily bar) are one instant, so the daily symbol took the
    hourly one's clock time and every one of its dates moved back a day, silently. Each
    distinct value as written has its own clock time."""
    from data.validation import to_datetime_column

    values = pd.Series([None, "2021-02-28T23:00:00+00:00", "2021-03-01T00:00:00+01:00",
                        "2021-03-02T00:00:00+01:00", "2021-03-03T00:00:00+01:00"])
    symbols = pd.Series(["CAC", "BTC", "CAC", "CAC", "CAC"])
    out = to_datetime_column(values, "date", "x.csv", symbols)
    assert out.isna().tolist() == [True, False, False, False, False]
    assert out[1:].tolist() == [pd.Timestamp("2021-02-28 23:00"), pd.Timestamp("2021-03-01"),
                                pd.Timestamp("2021-03-02"), pd.Timestamp("2021-03-03")]
