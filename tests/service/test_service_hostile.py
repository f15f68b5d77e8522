"""Malformed and hostile submissions over real HTTP: each gets the right 4xx with a message
that names the problem, and neither the job table nor storage changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

LIMIT = 256 * 1024  # = conftest.HOSTILE_LIMIT, needed at collection time
SPEC: dict[str, Any] = {
    "name": "t1",
    "dataset": {"uri": "sample:sp500", "symbols": 2},
    "models": ["ols", "lstm"],
}
Ctx = tuple[Any, str, Path]  # (conftest.Api, an existing job id of alice, the data root)


def spec(**changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(SPEC))
    for dotted, value in changes.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


JSON = {"Content-Type": "application/json"}


def _json(body: Any) -> dict[str, Any]:
    return {"content": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}


def _yaml(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"Content-Type": "application/yaml"}}


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
TICKERS = [f"S{i:04d}" for i in range(10_000)]

# (id, request kwargs for POST /v1/jobs, status, error code, text the message must contain)
CASES: list[tuple[str, dict[str, Any], int, str, str]] = [
    (
        "bad-json",
        {"content": b'{"name": "x",', "headers": {"Content-Type": "application/json"}},
        400,
        "malformed",
        "invalid JSON",
    ),
    (
        "duplicate-json-key",
        {"content": b'{"name": "x", "models": ["ols"], "models": ["lstm"]}',
         "headers": {"Content-Type": "application/json"}},
        400,
        "malformed",
        "duplicate key 'models'",
    ),
    (
        "duplicate-yaml-key",
        {"content": b"name: x\nmodels: [ols]\nname: y\n",
         "headers": {"Content-Type": "application/yaml"}},
        400,
        "malformed",
        "duplicate key 'name'",
    ),
    (
        "empty-body",
        {"content": b"", "headers": {"Content-Type": "application/json"}},
        400,
        "malformed",
        "empty",
    ),
    ("not-utf8", {"content": b'{"name": "\xff\xfe"}', "headers": JSON}, 400, "malformed", "UTF-8"),
    (
        "deep-nesting",
        {
            "content": b"[" * 100_000 + b"]" * 100_000,
            "headers": {"Content-Type": "application/json"},
        },
        400,
        "malformed",
        "nested too deeply",
    ),
    ("json-array", _json([SPEC]), 422, "invalid", "mapping"),
    (
        "unknown-model",
        _json(spec(models=["ols", "bogus"])),
        422,
        "invalid",
        "unknown model 'bogus'",
    ),
    ("negative-epochs", _json(spec(max_epochs=-3)), 422, "invalid", "max_epochs"),
    (
        "negative-train-epochs",
        _json(spec(overrides={"lstm": {"train": {"epochs": 100_000}}})),
        422,
        "invalid",
        "epochs",
    ),
    (
        "10000-symbols-int",
        _json(spec(**{"dataset.symbols": 10_000})),
        422,
        "invalid",
        "dataset.symbols",
    ),
    (
        "10000-symbols-list",
        _json(spec(**{"dataset.symbols": TICKERS})),
        422,
        "invalid",
        "at most 600",
    ),
    (
        "huge-seq-len",
        _json(spec(**{"features.seq_len": 100_000})),
        422,
        "invalid",
        "features.seq_len",
    ),
    (
        "too-many-tune-samples",
        _json(spec(**{"tune.num_samples": 100_000})),
        422,
        "invalid",
        "tune.num_samples",
    ),
    ("unknown-field", _json({**SPEC, "gpus": 8}), 422, "invalid", "gpus"),
    (
        "unknown-nested-field",
        _json(spec(**{"dataset.password": "x"})),
        422,
        "invalid",
        "dataset.password",
    ),
    (
        "missing-models",
        _json({k: v for k, v in SPEC.items() if k != "models"}),
        422,
        "invalid",
        "models",
    ),
    ("bad-name", _json(spec(name="../../etc")), 422, "invalid", "name"),
    (
        "dataset-traversal",
        _json(spec(**{"dataset.uri": "file:///data/../../etc/passwd"})),
        422,
        "invalid",
        "dataset.uri",
    ),
    (
        "dataset-etc",
        _json(spec(**{"dataset.uri": "file:///etc/passwd"})),
        422,
        "invalid",
        "outside the allowed data roots",
    ),
    (
        "dataset-plain-path",
        _json(spec(**{"dataset.uri": "/etc/shadow"})),
        422,
        "invalid",
        "outside the allowed data roots",
    ),
    (
        "dataset-foreign-s3",
        _json(spec(**{"dataset.uri": "s3://evil/x.parquet"})),
        422,
        "invalid",
        "outside the allowed data roots",
    ),
    (
        "dataset-unknown-sample",
        _json(spec(**{"dataset.uri": "sample:nope"})),
        422,
        "invalid",
        "unknown sample dataset",
    ),
    ("yaml-bomb", _yaml(BOMB), 400, "malformed", "aliases"),
    ("invalid-yaml", _yaml("name: [unclosed\nmodels: {"), 400, "malformed", "invalid YAML"),
    ("yaml-scalar", _yaml("just a string"), 422, "invalid", "mapping"),
    (
        "yaml-python-tag",
        _yaml("!!python/object/apply:os.system ['true']"),
        400,
        "malformed",
        "invalid YAML",
    ),
    (
        "wrong-content-type",
        {"content": json.dumps(SPEC).encode(), "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media",
        "text/plain",
    ),
    (
        "form-content-type",
        {"data": {"name": "x"}},
        415,
        "unsupported_media",
        "application/x-www-form-urlencoded",
    ),
    ("oversized-body", {"content": b" " * (LIMIT + 1), "headers": JSON}, 413, "too_large", "limit"),
    (
        "oversized-chunked",
        {"content": iter([b" " * 65536] * 5), "headers": {"Content-Type": "application/json"}},
        413,
        "too_large",
        "limit",
    ),
    (  # JSON's escape of a lone surrogate: no UTF-8 text, nor an answer, holds it (a 500)
        "lone-surrogate-key",
        {"content": b'{"name": "x", "dataset": {"uri": "sample:sp500"}, "models": ["ols"], '
                    b'"\\ud800": 1}', "headers": JSON},
        422,
        "invalid",
        "unpaired UTF-16 surrogate",
    ),
    (
        "lone-surrogate-override",
        {"content": b'{"name": "x", "dataset": {"uri": "sample:sp500"}, "models": ["lstm"], '
                    b'"overrides": {"lstm": {"\\udfff": 1}}}', "headers": JSON},
        422,
        "invalid",
        "overrides.lstm.\\udfff: this key holds an unpaired",
    ),
    (
        "lone-surrogate-uri",
        {"content": b'{"name": "x", "dataset": {"uri": "/data/\\ud800.csv"}, '
                    b'"models": ["ols"]}', "headers": JSON},
        422,
        "invalid",
        "dataset.uri: this text holds an unpaired",
    ),
    (
        "train-setting-given-twice",
        _json(spec(overrides={"lstm": {"train.epochs": 2, "train": {"epochs": 3}}})),
        422,
        "invalid",
        "overrides.lstm.train.epochs: given twice, as train.epochs: 2 and inside train: "
        "{epochs: 3}: keep one",
    ),
    (
        "bad-idempotency-key",
        {
            **_json(SPEC),
            "headers": {"Content-Type": "application/json", "Idempotency-Key": "k" * 300},
        },
        400,
        "malformed",
        "Idempotency-Key",
    ),
]


def _assert_error(resp: Any, status: int, code: str, text: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == code, body
    everything = (
        body["message"] + " " + " ".join(f"{e['field']} {e['message']}" for e in body["errors"])
    )
    assert text in everything, body


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_submission_is_refused_and_changes_nothing(
    hostile: Ctx, request_kwargs: dict, status: int, code: str, text: str
) -> None:
    api, _, _ = hostile
    before_rows, before_files = api.job_count(), api.stored_files()
    with api.client() as c:
        resp = c.post("/v1/jobs", **request_kwargs)
    _assert_error(resp, status, code, text)
    assert api.job_count() == before_rows
    assert api.stored_files() == before_files


def test_thousands_of_problems_are_answered_with_the_first_fifty_and_a_count(
        hostile: Ctx) -> None:
    """70,000 unknown fields in a 1 MB body made a 20 MB answer, each naming every allowed
    field again: the first 50 are listed, then how many more there are."""
    api, _, _ = hostile
    body = {**SPEC, **{f"k{i}": i for i in range(5000)}}
    with api.client() as c:
        resp = c.post("/v1/jobs", json=body)
    _assert_error(resp, 422, "invalid", "and 4950 more problems not listed")
    assert len(resp.json()["errors"]) == 51 and len(resp.content) < 20_000
    with api.client() as c:  # the same for keys no field can hold (YAML's `1:`)
        resp = c.post("/v1/jobs", **_yaml("name: x\n" + "".join(f"{i}: 1\n" for i in range(80))))
    _assert_error(resp, 422, "invalid", "and 30 more problems not listed")
    assert len(resp.json()["errors"]) == 51


@pytest.mark.parametrize(
    ("uri", "symbols", "text"),
    [
        ("{root}/missing.parquet", 1, "cannot read dataset"),
        ("{root}/bars\x00.parquet", 1, "holds a NUL character"),  # realpath raised: a 500
        ("file://{root}/bars.parquet%00", 1, "holds a NUL character"),
        ("file://{root}/bars.parquet", ["AAA", "ZZZ"], "not in"),
        ("{root}/bars.parquet", 3, "has 2"),
        ("file://{root}/escape/passwd", 1, "outside the allowed data roots"),
        ("file://{root}/%2e%2e/outside.parquet", 1, "'..'"),
        ("file://{root}/%2E%2E/outside.parquet", 1, "'..'"),
        ("file://{root}/..%2foutside.parquet", 1, "'..'"),
        ("{root}/empty.csv", 1, "has no rows with a symbol"),
        ("{root}/no_symbol.csv", ["AAA"], "1 row has no symbol: fill or remove it at the "
         "source (`quantray data inspect {root}/no_symbol.csv` names it)"),
    ],
    ids=[
        "missing-file",
        "nul",
        "encoded-nul",
        "missing-symbol",
        "too-few-symbols",
        "symlink-escape",
        "encoded-dotdot",
        "encoded-DOTDOT",
        "encoded-slash",
        "empty-file",
        "a-row-without-a-symbol",
    ],
)
def test_dataset_is_checked_against_roots_and_content(
    hostile: Ctx, uri: str, symbols: Any, text: str
) -> None:
    api, _, root = hostile
    before = api.job_count()
    body = spec(**{"dataset.uri": uri.format(root=root), "dataset.symbols": symbols})
    with api.client() as c:
        resp = c.post("/v1/jobs", json=body)
    _assert_error(resp, 422, "invalid", text.format(root=root))
    assert any(e["field"].startswith("dataset.") for e in resp.json()["errors"])
    assert api.job_count() == before


@pytest.mark.parametrize(
    ("dataset", "field", "text"),
    [
        ({"start": "2030-01-01"}, "dataset.start",
         "runs from 2012-01-02 to 2017-09-29: widen the dates"),
        ({"end": "2005-12-31"}, "dataset.end", "(the most: AAA with 0)"),
        ({"start": "2017-06-01", "end": "2017-09-29"}, "dataset.start", "(the most: BBB with 87)"),
        ({"symbols": ["AAA"]}, "dataset.symbols", "rows its preparation needs in the dataset "
         "(the most: AAA with 60)"),
        ({"uri": "{root}/bad_dates.csv", "symbols": ["AAA"]}, "dataset.uri", "'someday'"),
        ({"uri": "{root}/lob.parquet", "symbols": ["AAA"]}, "dataset.kind",
         "missing columns ['date', 'open', 'high', 'low', 'close', 'volume']; found "
         "['symbol', 'ts', 'ask_price_1', 'ask_size_1', 'bid_price_1', 'bid_size_1']; these "
         "look like order-book snapshots: set `dataset.kind: lob`"),
        ({"uri": "{root}/adj_close.csv", "symbols": ["AAA"]}, "dataset.uri",
         "missing columns ['close']; found ['symbol', 'date', 'open', 'high', 'low', 'Adj "
         "Close', 'volume']"),
        ({"uri": "{root}/bars.parquet", "kind": "lob"}, "dataset.kind",
         "missing columns ['ts', 'ask_price_1', 'ask_size_1', 'bid_price_1', 'bid_size_1']; "
         "found ['symbol', 'date', 'open', 'high', 'low', 'close', 'volume']; these look like "
         "bars: set `dataset.kind: bars`"),
    ],
    ids=["after-the-data", "before-the-data", "window-too-short", "symbol-too-short",
         "unparseable-dates", "lob-without-its-kind", "a-price-column-missing",
         "bars-as-lob"],
)  # fmt: skip
def test_a_job_no_symbol_of_which_has_enough_rows_is_refused(
    hostile: Ctx, dataset: dict[str, Any], field: str, text: str
) -> None:
    """Every unit of such a job would fail on the cluster: refused at submit, naming the
    field, the need and what the data holds."""
    api, _, root = hostile
    changes = {"dataset.uri": f"{root}/bars.parquet", "dataset.symbols": ["AAA", "BBB"]}
    changes.update({f"dataset.{k}": v.format(root=root) if isinstance(v, str) else v
                    for k, v in dataset.items()})  # fmt: skip
    before_rows, before_files = api.job_count(), api.stored_files()
    with api.client() as c:
        resp = c.post("/v1/jobs", json=spec(**changes))
    _assert_error(resp, 422, "invalid", text)
    assert [e["field"] for e in resp.json()["errors"]] == [field], resp.text
    assert api.job_count() == before_rows and api.stored_files() == before_files


ENDPOINT = "endpoint_override=http://127.0.0.1:8720&region=us-east-1&scheme=http"


@pytest.mark.parametrize(
    ("root", "uri", "text"),
    [
        ("s3://qr-data", f"s3://qr-data/bars/bars.parquet?{ENDPOINT}",
         f"under data root 's3://qr-data' but with the query '{ENDPOINT}', where the root has "
         "none: a dataset is read only through its root's own endpoint, so QUANTRAY_DATA_ROOTS "
         f"must name this endpoint too: s3://qr-data?{ENDPOINT}"),
        (f"s3://qr-data?{ENDPOINT}", "s3://qr-data/bars.parquet?region=eu-west-1",
         f"so give the root's query ({ENDPOINT}), or QUANTRAY_DATA_ROOTS must name this "
         "endpoint too: s3://qr-data?region=eu-west-1"),
        (f"s3://qr-data?{ENDPOINT}", "s3://qr-data/bars.parquet",
         f"but with no query, where the root has the query '{ENDPOINT}': a dataset is read "
         f"only through its root's own endpoint: give the root's query "
         f"(s3://qr-data/bars.parquet?{ENDPOINT})"),
        ("s3://qr-data/bars", f"s3://qr-data/other.parquet?{ENDPOINT}",
         "outside the allowed data roots: use a dataset under s3://qr-data/bars"),
    ],
    ids=["root-without-endpoint", "another-endpoint", "dataset-without-endpoint",
         "outside-the-path"],
)  # fmt: skip
def test_an_s3_dataset_under_a_root_with_another_endpoint_says_what_to_configure(
    tmp_path: Path, qr: Any, root: str, uri: str, text: str
) -> None:
    """The endpoint is part of the root (else a spec could point the server at any S3
    endpoint): the 422 says so, and names the root to configure, not "use a dataset under
    s3://qr-data", which the dataset is."""
    server, api = qr.start_api(qr.make_settings(tmp_path, data_roots=(root,)), {"alice": False})
    try:
        with api.client() as c:
            resp = c.post("/v1/jobs", json=spec(**{"dataset.uri": uri}))
    finally:
        server.__exit__()
    _assert_error(resp, 422, "invalid", text)
    assert [e["field"] for e in resp.json()["errors"]] == ["dataset.uri"]


def test_dataset_inside_root_is_accepted(hostile: Ctx) -> None:
    """AAA is too short for the job, BBB is not: the job runs and AAA's units fail alone."""
    api, _, root = hostile
    body = spec(**{"dataset.uri": f"{root}/bars.parquet", "dataset.symbols": ["AAA", "BBB"]})
    with api.client() as c:
        resp = c.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    with api.client() as c:  # leave the module's table as the other tests expect it
        c.post(f"/v1/jobs/{resp.json()['id']}/cancel")


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"lstm": {"hidden_size": -5}}, "overrides.lstm.hidden_size", "positive integer"),
        ({"lstm": {"hidden_size": "big"}}, "overrides.lstm.hidden_size", "expected an integer"),
        ({"lstm": {"hidden_size": 100_000_000}}, "overrides.lstm.hidden_size", "at most 4096"),
        ({"lstm": {"bidirectional": "false"}}, "overrides.lstm.bidirectional", "true or false"),
        ({"ols": {"hac_maxlags": -1}}, "overrides.ols.hac_maxlags", "integer >= 0"),
    ],
)  # fmt: skip
def test_bad_override_values_are_refused_at_submit(
    hostile: Ctx, overrides: dict, field: str, words: str
) -> None:
    """A value the model's config refuses gets a 422 naming the field before anything is
    stored, not a job that fails on the cluster."""
    api, _, _ = hostile
    before_rows, before_files = api.job_count(), api.stored_files()
    models = ["ols", "lstm"]
    with api.client() as c:
        resp = c.post("/v1/jobs", json=spec(models=models, overrides=overrides))
    _assert_error(resp, 422, "invalid", words)
    assert [e["field"] for e in resp.json()["errors"]] == [field], resp.text
    assert api.job_count() == before_rows and api.stored_files() == before_files


def test_tune_symbols_outside_the_jobs_first_n_are_refused(hostile: Ctx) -> None:
    api, _, _ = hostile
    body = spec(models=["ols", "lstm"], tune={"num_samples": 2, "symbols": ["ZZZ"]})
    with api.client() as c:
        resp = c.post("/v1/jobs", json=body)
    _assert_error(resp, 422, "invalid", "not among the job's 2 symbols")
    assert resp.json()["errors"][0]["field"] == "tune.symbols"


def test_lowercase_symbol_gets_a_case_hint(hostile: Ctx) -> None:
    """The file's spelling, in the words of `quantray train` and the driver (it said
    "case-sensitive: AAPL?", and nothing for 'AAPL ' where the file spells 'AAPL')."""
    api, _, _ = hostile
    with api.client() as c:
        resp = c.post("/v1/jobs", json=spec(**{"dataset.symbols": ["aapl", "ABT"]}))
    _assert_error(resp, 422, "invalid", ": aapl; the file spells 'AAPL': symbols match "
                  "exactly, case and spaces included")


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"content": b'{"name": "x",', "headers": JSON}, "body"),
        ({"content": b"\xff\xfe", "headers": JSON}, "body"),
        ({"content": b"", "headers": JSON}, "body"),
        ({"content": b"name: x", "headers": {"Content-Type": "text/plain"}}, "header.Content-Type"),
        ({"json": SPEC, "headers": {"Idempotency-Key": "has space"}}, "header.Idempotency-Key"),
        ({"json": SPEC, "headers": {"Idempotency-Key": "k" * 201}}, "header.Idempotency-Key"),
        # two keys: the first was used, the second dropped without a word
        ({"json": SPEC, "headers": [("Idempotency-Key", "a1"), ("Idempotency-Key", "a2")]},
         "header.Idempotency-Key"),
        ({"content": b"#" * (LIMIT + 1), "headers": {"Content-Type": "application/yaml"}},
         "body"),
    ],
    ids=["bad-json", "not-utf8", "empty", "text-plain", "key-space", "key-too-long",
         "key-twice", "too-large"],
)
def test_a_malformed_submit_names_the_part_to_fix(
    hostile: Ctx, request_kwargs: dict, field: str
) -> None:
    """Every 4xx error body names its field in `errors` (`{field, message}`), the body and
    the headers included, not only the spec's fields."""
    api, _, _ = hostile
    with api.client() as c:
        resp = c.post("/v1/jobs", **request_kwargs)
    assert resp.status_code in (400, 413, 415), resp.text
    errors = resp.json()["errors"]
    assert [e["field"] for e in errors] == [field], resp.json()
    assert errors[0]["message"], resp.json()


def test_too_many_walk_forward_folds_for_the_data_name_split_n_folds(hostile: Ctx) -> None:
    """20 folds where the data holds enough for fewer: the refusal listed every lever
    but the one at fault."""
    api, _, root = hostile
    body = spec(**{"dataset.uri": f"{root}/bars.parquet", "dataset.symbols": ["BBB"],
                   "dataset.end": "2014-06-30", "split.method": "walk_forward",
                   "split.n_folds": 20})
    before = api.job_count()
    with api.client() as c:
        refused = c.post("/v1/jobs", json=body)
    _assert_error(refused, 422, "invalid", "lower split.n_folds (20: each fold needs its own "
                  "test block)")
    assert api.job_count() == before


def test_two_authorization_headers_are_refused(hostile: Ctx) -> None:
    """The first one was used: a good key first passed, a bogus one first was a 401."""
    api, _, _ = hostile
    good = f"Bearer {api.keys['alice']}"
    with api.client(who=None) as c:
        for first, second in ((good, "Bearer qr_bogus"), ("Bearer qr_bogus", good)):
            resp = c.get("/v1/jobs", headers=[("Authorization", first),
                                              ("Authorization", second)])
            assert resp.status_code == 400, resp.text
            assert resp.json()["errors"] == [{"field": "header.Authorization",
                                              "message": "give it once"}]
        assert c.get("/v1/jobs", headers={"Authorization": good}).status_code == 200


def test_bars_submitted_as_lob_name_dataset_kind(hostile: Ctx) -> None:
    """Bars submitted as `kind: lob` (as snapshots submitted as bars, above): the field to
    fix is dataset.kind, not the file's URI."""
    api, _, root = hostile
    body = spec(**{"dataset.uri": f"{root}/bars.parquet", "dataset.symbols": ["AAA"],
                   "dataset.kind": "lob"})  # fmt: skip
    with api.client() as c:
        resp = c.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == ["dataset.kind"], resp.json()


def test_a_window_too_short_for_intraday_data_names_the_span_to_the_second(
    hostile: Ctx,
) -> None:
    """Order-book snapshots of one day: the 422 says when the file starts and ends (its
    date alone said "from 2024-03-04 to 2024-03-04")."""
    api, _, root = hostile
    body = spec(**{"dataset.uri": f"{root}/lob_day.parquet", "dataset.kind": "lob",
                   "dataset.symbols": ["AAA"]})
    with api.client() as c:
        resp = c.post("/v1/jobs", json=body)
    _assert_error(resp, 422, "invalid",
                  "lob_day.parquet' runs from 2024-03-04T09:30:00 to 2024-03-04T09:30:01")
