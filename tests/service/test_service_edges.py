"""Edge cases of the HTTP API found by probing it with unseen requests: malformed job ids,
huge numbers and odd keys in a spec, dates past pandas' range, a CPU-costly YAML body, 500s
on a keep-alive connection, metric labels, the CSV header size, artifact links and names,
the attempt numbers of resumed jobs, and the OpenAPI document."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.dataset_probe import DatasetProbe
from service.store import JobConflict, JobStore

SPEC: dict[str, Any] = {
    "name": "t1",
    "dataset": {"uri": "sample:sp500", "symbols": ["AAPL"]},
    "models": ["ols"],
}
YAML_HEAD = 'name: t\ndataset: {uri: "sample:sp500", symbols: [AAPL]}\nmodels: [ols]\n'
JOB = "qr-0123456789abcdef"  # well-formed, no such job


def _yaml(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"Content-Type": "application/yaml"}}


def _json_text(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


def _refused(api: Any, resp: Any, status: int, field: str, text: str,
             before: tuple[int, list[Path]]) -> None:
    """`resp` is `status` with an error naming `field` (and `text`), and nothing changed."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert [e["field"] for e in body["errors"]] == [field], body
    assert text in body["message"] and text in body["errors"][0]["message"], body
    assert (api.job_count(), api.stored_files()) == before


@pytest.fixture
def any_db_api(db_url: str, tmp_path: Path, qr: Any) -> Iterator[Any]:
    """The API on SQLite and on PostgreSQL (where a NUL byte in a query is an error)."""
    settings = qr.make_settings(tmp_path, database_url=db_url)
    server, api = qr.start_api(settings, {"alice": False})
    try:
        yield api
    finally:
        server.__exit__()
        api.engine.dispose()


def test_a_malformed_job_id_is_a_404_naming_it_before_any_database_read(any_db_api: Any) -> None:
    """A NUL byte was a 500 (PostgreSQL refuses it in a text parameter), on every
    /v1/jobs/{id} route; 5,000 characters were echoed back whole."""
    api = any_db_api
    with api.client() as c:
        job_id = c.post("/v1/jobs", json={**SPEC, "dataset": {"uri": "sample:sp500"}}).json()["id"]
        answers = [
            c.get("/v1/jobs/%00"),
            c.post("/v1/jobs/qr-%00abc/cancel"),
            c.post("/v1/jobs/qr-%00abc/resume"),
            c.get("/v1/jobs/%00/artifacts/x"),
            c.get("/v1/jobs/%00/logs"),
            c.get("/v1/jobs/qr-0123456789ABCDEF/results"),  # upper case: never made
            c.get(f"/v1/jobs/{job_id} /summary"),
            c.get("/v1/jobs/" + "q" * 5000),
        ]
        fine = c.get(f"/v1/jobs/{job_id}")
    for resp in answers:
        assert resp.status_code == 404, resp.text
        body = resp.json()
        assert body["error"] == "not_found" and "is not valid" in body["message"], body
        assert body["errors"][0]["field"] == "path.job_id", body
        assert "qr- and 16 lowercase hex digits" in body["errors"][0]["message"]
    assert "(5000 characters)" in answers[-1].json()["message"]
    assert len(answers[-1].text) < 500
    assert fine.status_code == 200 and fine.json()["status"] == "queued"


def test_store_get_refuses_a_malformed_id_without_the_database(any_db_api: Any) -> None:
    from service.store import JobNotFound

    with pytest.raises(JobNotFound, match="is not valid"):
        JobStore(any_db_api.engine).get("qr-\x00")


@pytest.mark.parametrize(
    ("request_kwargs", "digits"),
    [
        (_json_text('{"name": "t", "dataset": {"uri": "sample:sp500", "symbols": ["AAPL"]}, '
                    '"models": ["ols"], "seed": ' + "9" * 4301 + "}"), "4301 digits"),
        (_json_text('{"name": "t", "dataset": {"uri": "sample:sp500", "symbols": ["AAPL"]}, '
                    '"models": ["ols"], "seed": ' + "9" * 400 + "}"), "of 400 digits"),
        (_yaml(YAML_HEAD + "seed: " + "9" * 5000 + "\n"), "5000 digits"),
        (_yaml(YAML_HEAD + "seed: 0x" + "f" * 5000 + "\n"), "about 6021 digits"),
    ],
    ids=["json-over-python-limit", "json-400-digits", "yaml-decimal", "yaml-hex"],
)
def test_a_huge_integer_in_a_spec_is_a_422_naming_its_field(
    api: Any, request_kwargs: dict[str, Any], digits: str
) -> None:
    """It was a 500 (Python refuses to convert over 4,300 digits), or a 422 with field ""
    quoting sys.set_int_max_str_digits()."""
    before = (api.job_count(), api.stored_files())
    with api.client() as c:
        resp = c.post("/v1/jobs", **request_kwargs)
    _refused(api, resp, 422, "seed", "out of range for every spec field", before)
    assert digits in resp.json()["message"]
    assert "set_int_max_str_digits" not in resp.text


@pytest.mark.parametrize(
    ("line", "field", "read_as"),
    [("yes: a", "yes", "a boolean"), ("on: a", "on", "a boolean"), ("1: a", "1", "a number"),
     ("~: a", "~", "null"), ("target: {5: a}", "target.5", "a number")],
)
def test_a_yaml_key_that_is_not_text_is_a_422_naming_it(
    api: Any, line: str, field: str, read_as: str
) -> None:
    """`yes:` at the top was "object of type 'bool' has no len()" with field ""."""
    before = (api.job_count(), api.stored_files())
    with api.client() as c:
        resp = c.post("/v1/jobs", **_yaml(YAML_HEAD + line + "\n"))
    _refused(api, resp, 422, field, "keys must be strings", before)
    assert f"reads as {read_as}" in resp.json()["message"]
    assert f"quote it ('{field.rsplit('.', 1)[-1]}'" in resp.json()["message"]


def test_yes_beside_1_is_not_a_key_given_twice(api: Any) -> None:
    """True == 1 in Python: the two keys were "duplicate key 1"."""
    with api.client() as c:
        resp = c.post("/v1/jobs", **_yaml(YAML_HEAD + "yes: a\n1: b\n"))
    assert resp.status_code == 422, resp.text
    assert {e["field"] for e in resp.json()["errors"]} == {"yes", "1"}


@pytest.mark.parametrize(
    ("dataset", "fields"),
    [
        ({"start": "2300-01-01"}, ["dataset.start"]),
        ({"start": "9999-01-01"}, ["dataset.start"]),
        ({"end": "9999-12-31"}, ["dataset.end"]),
        ({"end": "2262-04-12"}, ["dataset.end"]),
        ({"start": "0001-01-01", "end": "2262-04-11T23:00:00"}, ["dataset.start", "dataset.end"]),
    ],
)
def test_a_window_past_the_range_of_dates_is_a_422_naming_start_or_end(
    api: Any, dataset: dict[str, str], fields: list[str]
) -> None:
    """start 2300-01-01 was accepted (numpy's cast to nanoseconds wrapped it to 1815, so
    every row counted) and the job failed on the cluster; end 9999-12-31 was blamed on
    dataset.uri with a pandas message."""
    before = (api.job_count(), api.stored_files())
    spec = {**SPEC, "dataset": {**SPEC["dataset"], **dataset}}
    with api.client() as c:
        resp = c.post("/v1/jobs", json=spec)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert [e["field"] for e in body["errors"]] == fields, body
    for error in body["errors"]:
        assert "1677-09-22 to 2262-04-10" in error["message"]
        assert f"leave {error['field'].split('.')[1]} out" in error["message"]
    assert (api.job_count(), api.stored_files()) == before


def test_the_probe_never_wraps_a_bound_past_the_nanosecond_range() -> None:
    probe = DatasetProbe()
    everything = probe.rows_in_window("sample:sp500", "date", None, None)["AAPL"]
    assert probe.rows_in_window("sample:sp500", "date", "2018-01-01", "2262-04-10")["AAPL"] < \
        everything  # fmt: skip
    for start, end in (("9999-01-01", None), (None, "9999-12-31")):
        with pytest.raises(ValueError, match="outside the times a dataset can hold"):
            probe.rows_in_window("sample:sp500", "date", start, end)


def test_a_yaml_spec_with_too_many_values_is_a_413_before_it_is_built(api: Any) -> None:
    """A 700 KB list cost ~26 s of CPU in PyYAML's pure-Python loader before the spec's own
    check refused it; the parse now stops at MAX_YAML_NODES values."""
    from service.validation import MAX_YAML_NODES

    body = YAML_HEAD + "x: [" + ",".join(["1"] * 30_000) + "]\n"  # 60 KB
    before = (api.job_count(), api.stored_files())
    with api.client() as c:
        resp = c.post("/v1/jobs", **_yaml(body))
    _refused(api, resp, 413, "body", f"more than {MAX_YAML_NODES} values", before)
    assert resp.json()["error"] == "too_large"


@pytest.mark.parametrize("text", ["[" * 60_000, "a:\n" + "".join(
    " " * i + "b:\n" for i in range(1, 200)), "{a: " * 10_000])
def test_deeply_nested_yaml_is_a_400_not_a_crash(api: Any, text: str) -> None:
    """libyaml's composer recurses in C: the nesting is checked on the parse events first."""
    with api.client() as c:
        resp = c.post("/v1/jobs", **_yaml(text))
        alive = c.get("/healthz")
    assert resp.status_code == 400 and "nested too deeply" in resp.json()["message"], resp.text
    assert alive.status_code == 200


def test_yaml_parsed_by_libyaml_reads_as_before(api: Any) -> None:
    """Dates, quoted symbols, booleans and comments read as PyYAML's loader read them."""
    text = ("# a comment\nname: t\ndataset:\n  uri: sample:sp500\n  symbols: ['AAPL']\n"
            "  start: 2014-01-02\nmodels: [ols]\nseed: 7\n")
    with api.client() as c:
        created = c.post("/v1/jobs", **_yaml(text))
        spec = c.get(f"/v1/jobs/{created.json()['id']}").json()["spec"]
    assert created.status_code == 201, created.text
    assert spec["dataset"]["start"] == "2014-01-02" and spec["seed"] == 7
    assert spec["dataset"]["symbols"] == ["AAPL"]


def test_a_500_leaves_the_keep_alive_connection_usable(
    api: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette's handler for `Exception` answered and re-raised, and uvicorn closed the
    connection: a pooled client's next request (here a POST) failed with a reset."""
    from service import routes_jobs

    real = routes_jobs._create
    calls = {"n": 0}

    def broken_once(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(routes_jobs, "_create", broken_once)
    host, port = api.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Authorization": f"Bearer {api.keys['alice']}",
               "Content-Type": "application/json"}
    body = json.dumps(SPEC)
    with caplog.at_level(logging.ERROR, logger="service.errors"):
        conn.request("POST", "/v1/jobs", body=body, headers=headers)
        first = conn.getresponse()
        first_body = json.loads(first.read())
        sock = conn.sock
        conn.request("POST", "/v1/jobs", body=body, headers=headers)
        second = conn.getresponse()
        second.read()
    conn.close()
    assert first.status == 500 and first_body["error"] == "internal"
    assert "RuntimeError" in first_body["message"] and "a bug" not in first_body["message"]
    assert (first.getheader("connection") or "").lower() != "close"
    assert second.status == 201 and conn.sock is None and sock is not None
    assert api.job_count() == 1
    assert "RuntimeError: a bug" in caplog.text  # the traceback is in the server log


def test_the_method_label_of_the_metrics_is_bounded(api: Any) -> None:
    """Each made-up method (`curl -X ZZ123`, no key needed on /healthz) was a new label set
    of ~16 series, forever."""
    with api.client(None) as c:
        for method in ("ZZ1", "ZZ2", "BREW", "get"):
            c.request(method, "/healthz")
        c.request("ZZ3", "/no/such/route")
        text = c.get("/metrics").text
    series = [line for line in text.splitlines()
              if line.startswith("quantray_http_request_duration_seconds_count")]
    assert not [s for s in series if "ZZ" in s or "BREW" in s or 'method="get"' in s], series
    assert any('method="other",route="/healthz",status="405"' in s for s in series), series
    assert any('method="other",route="unmatched",status="404"' in s for s in series), series


def _leaderboard(api: Any, job_id: str, table: pa.Table) -> Path:
    results = api.storage / "jobs" / job_id / "results"
    results.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, results / "leaderboard.parquet")
    return api.storage / "jobs" / job_id


def test_the_csv_unmatched_header_is_capped_and_says_where_the_list_is(api: Any) -> None:
    """600 unmatched symbols made a 44 KB header (Node and nginx refuse over 16 KB)."""
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        _leaderboard(api, job_id, pa.table({
            "symbol": [f"K{i:03d}" for i in range(30)], "model": ["ols"] * 30,
            "horizon": [1] * 30}))  # fmt: skip
        wanted = [f"S{i:03d}" for i in range(600)]
        csv = c.get(f"/v1/jobs/{job_id}/results", params={"symbol": wanted},
                    headers={"Accept": "text/csv"})
        full = c.get(f"/v1/jobs/{job_id}/results", params={"symbol": wanted})
        one = c.get(f"/v1/jobs/{job_id}/results", params={"symbol": ["S000"]},
                    headers={"Accept": "text/csv"})
    note = csv.headers["quantray-unmatched"]
    assert csv.status_code == 200 and len(note) <= 4000, len(note)
    assert "symbol 'S000' is not in this leaderboard" in note
    assert "more unmatched filter values" in note and "Accept: application/json" in note
    assert len(full.json()["unmatched"]) == 600
    assert one.headers["quantray-unmatched"].startswith("symbol 'S000' is not in")
    assert "more unmatched" not in one.headers["quantray-unmatched"]


def test_artifact_uri_is_an_api_link_not_a_server_path(api: Any, tmp_path: Path) -> None:
    """The leaderboard's artifact_uri is where the driver stored the model (file:///srv/...,
    or s3://bucket/...?endpoint_override=...): the API answers the link that lists it."""
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        base = _leaderboard(api, job_id, pa.table({
            "symbol": ["BRK.B", "AAA", "BRK.B"], "model": ["ols", "lstm", "ensemble_equal"],
            "artifact_uri": [
                f"file://{api.storage}/jobs/{job_id}/units/BRK_B/ols/f0/model",
                f"s3://b/p/jobs/{job_id}/units/AAA/lstm/f1/model?endpoint_override=http://h:9",
                None]}))  # fmt: skip
        model = base / "units" / "BRK_B" / "ols" / "f0" / "model"
        model.mkdir(parents=True)
        (model / "metadata.json").write_text("{}")
        rows = c.get(f"/v1/jobs/{job_id}/results").json()["rows"]
        csv = c.get(f"/v1/jobs/{job_id}/results", headers={"Accept": "text/csv"}).text
        listed = c.get(rows[0]["artifact_uri"])
    assert [r["artifact_uri"] for r in rows] == [
        f"/v1/jobs/{job_id}/artifacts?prefix=BRK_B/ols/f0/model",
        f"/v1/jobs/{job_id}/artifacts?prefix=AAA/lstm/f1/model", None]
    assert "file://" not in csv and "s3://" not in csv and str(api.storage) not in csv
    assert listed.json()["files"] == [{"path": "BRK_B/ols/f0/model/metadata.json", "size": 2}]


def test_artifact_paths_name_the_safe_form_of_a_symbol(api: Any) -> None:
    """`AB C` and `ÄBC` are stored as AB_C and _BC: the refusal says so, and `_BC` (a safe
    name starting with _, as ^GSPC's _GSPC) is served."""
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        for safe in ("AB_C", "_BC"):
            unit = api.storage / "jobs" / job_id / "units" / safe / "ols" / "f0"
            unit.mkdir(parents=True)
            (unit / "metrics.json").write_text('{"ok": 1}')
        spaced = c.get(f"/v1/jobs/{job_id}/artifacts/AB%20C/ols/f0/metrics.json")
        umlaut = c.get(f"/v1/jobs/{job_id}/artifacts", params={"prefix": "ÄBC"})
        underscore = c.get(f"/v1/jobs/{job_id}/artifacts/_BC/ols/f0/metrics.json")
        partial = c.get(f"/v1/jobs/{job_id}/artifacts", params={"prefix": "AB"})
        prefix = c.get(f"/v1/jobs/{job_id}/artifacts", params={"prefix": "AB C"})
    assert spaced.status_code == 400 and "use 'AB_C' ('AB_C/ols/f0/metrics.json')" in \
        spaced.json()["message"]  # fmt: skip
    assert umlaut.status_code == 400 and umlaut.json()["message"].endswith(
        "(ASCII letters A-Z and a-z, digits and ._=+@- only, starting with a letter, digit "
        "or _); a symbol's files are stored under its file-safe name: use '_BC'")  # Ä: no
    assert prefix.status_code == 400 and prefix.json()["message"].endswith(
        "file-safe name: use 'AB_C'"), prefix.json()  # not "use 'AB_C' ('AB_C')"
    assert umlaut.json()["errors"][0]["field"] == "query.prefix"
    assert underscore.status_code == 200 and underscore.json() == {"ok": 1}
    assert partial.status_code == 404 and "a prefix is a whole folder" in \
        partial.json()["message"]  # fmt: skip


def test_a_resume_of_a_job_that_never_left_the_queue_keeps_its_attempt(api: Any) -> None:
    """Cancel/resume cycles while queued went from attempt 0 to 17, each a Ray submission
    id (-r17) and a `?attempt=N` with no log. Only an attempt that reached Ray counts."""
    store = JobStore(api.engine)
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        for _ in range(3):
            c.post(f"/v1/jobs/{job_id}/cancel")
            assert c.post(f"/v1/jobs/{job_id}/resume").json()["attempt"] == 0
        store.transition(job_id, "queued", status="failed", ray_submission_id=job_id)  # ran
        assert c.post(f"/v1/jobs/{job_id}/resume").json()["attempt"] == 1
        c.post(f"/v1/jobs/{job_id}/cancel")  # attempt 1, still queued
        assert c.post(f"/v1/jobs/{job_id}/resume").json()["attempt"] == 1
        earlier = c.get(f"/v1/jobs/{job_id}/logs", params={"attempt": 0})
    message = earlier.json()["message"]
    assert earlier.status_code == 404
    # a reason, then the fact: not "attempt 0's driver log, and job ... stored no ..."
    assert message.startswith("no Ray cluster is configured (QUANTRAY_RAY_ADDRESS), and job")
    assert "stored no driver log for attempt 0" in message and "driver log," not in message


def test_results_of_a_job_cancelled_while_queued_say_it_never_ran(
    api: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Not "if QUANTRAY_STORAGE_URI changed since the job ran": it never ran, and a resume
    runs it."""
    from service.cli import main

    store = JobStore(api.engine)
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        assert c.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        results = c.get(f"/v1/jobs/{job_id}/results")
        summary = c.get(f"/v1/jobs/{job_id}/summary")
        c.post(f"/v1/jobs/{job_id}/resume")  # an attempt that reached Ray, then one that did not
        store.transition(job_id, "queued", status="failed", ray_submission_id=job_id)
        c.post(f"/v1/jobs/{job_id}/resume")
        c.post(f"/v1/jobs/{job_id}/cancel")
        again = c.get(f"/v1/jobs/{job_id}/results")
    assert results.status_code == 404 and summary.status_code == 404
    assert results.json()["message"] == (
        f"job {job_id} (cancelled) has no results/leaderboard.parquet (the job was cancelled "
        "while queued, before it was submitted to Ray: it never ran; resume it to run it, "
        f"`quantray resume {job_id}` or POST /v1/jobs/{job_id}/resume)")
    assert "has no results/summary.json (the job was cancelled while queued" in \
        summary.json()["message"]  # fmt: skip
    assert "submitted to Ray: its attempt 1 never ran, and the earlier ones did not write " \
        "it; resume it" in again.json()["message"]  # fmt: skip
    monkeypatch.setenv("QUANTRAY_API", api.url)
    monkeypatch.setenv("QUANTRAY_API_KEY", api.keys["alice"])
    assert main(["results", job_id]) == 1  # `quantray results ID` says the same
    assert "before it was submitted to Ray: its attempt 1 never ran" in capsys.readouterr().err


def test_a_resume_that_loses_a_race_says_the_job_was_just_resumed(api: Any) -> None:
    store = JobStore(api.engine)
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        c.post(f"/v1/jobs/{job_id}/cancel")
    stale = store.get(job_id)
    store.resume(stale)
    with pytest.raises(JobConflict, match="was just resumed by another request"):
        store.resume(stale)


def test_openapi_describes_what_the_api_takes(api: Any) -> None:
    with api.client() as c:
        doc = c.get("/openapi.json").json()
        options = c.options("/v1/jobs")
        unknown = c.get("/v1/models", params={"foo": "1"})
    post = doc["paths"]["/v1/jobs"]["post"]
    # the YAML body is the document itself: a string schema got it sent YAML-quoted
    assert post["requestBody"]["content"]["application/yaml"]["schema"]["format"] == "binary"
    key = next(p for p in post["parameters"] if p["name"].lower() == "idempotency-key")
    assert key["schema"]["maxLength"] == 200 and key["schema"]["pattern"]
    listing = doc["paths"]["/v1/jobs"]["get"]["parameters"]
    size = next(p for p in listing if p["name"] == "page_size")["schema"]["anyOf"][0]
    assert size["maximum"] == api.settings.max_page_size
    get_job = doc["paths"]["/v1/jobs/{job_id}"]["get"]["parameters"][0]
    assert get_job["schema"]["pattern"] == "^qr-[0-9a-f]{16}$"
    logs = doc["paths"]["/v1/jobs/{job_id}/logs"]["get"]["responses"]
    assert set(logs["404"]["content"]) == {"application/json"}
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]
    assert "401" in doc["paths"]["/v1/models"]["get"]["responses"]
    plot = doc["paths"]["/v1/jobs/{job_id}/plots/{name}"]["get"]["parameters"]
    assert any(p["name"] == "name" and p["schema"].get("pattern") for p in plot)
    # OPTIONS /v1/jobs said Allow: POST only
    assert options.status_code == 405 and options.headers["allow"] == "GET, HEAD, POST"
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "query.foo"


def test_an_empty_yaml_document_says_so_without_type_names(api: Any) -> None:
    with api.client() as c:
        empty = c.post("/v1/jobs", **_yaml("# nothing here\n"))
        listed = c.post("/v1/jobs", **_yaml("- a\n- b\n"))
    assert empty.status_code == 422 and "got nothing" in empty.json()["message"]
    assert listed.status_code == 422 and "got a list" in listed.json()["message"]
    assert "NoneType" not in empty.text and "got list" not in listed.text


def test_the_probe_reads_missing_csv_dates_as_the_loader_does(tmp_path: Path, qr: Any) -> None:
    """An empty, NA or NULL date cell is a missing date to `data.loading` (a per-symbol
    error there); the submit check refused the whole file ("values that are not dates,
    e.g. ''"). A ticker spelled NA stays a symbol, as the loader reads it."""
    from data.loading import load_bars

    days = [d.date().isoformat() for d in pd.bdate_range("2012-01-02", periods=1500)]
    lines = ["symbol,date,open,high,low,close,volume"]
    for symbol in ("AAA", "NA"):
        lines += [f"{symbol},{d},1,1,1,1,1" for d in days]
    lines += [f"BBB,{d},1,1,1,1,1" for d in ["", "NA", "NULL", *days[:5]]]
    root = tmp_path / "data"
    root.mkdir()
    csv = root / "gaps.csv"
    csv.write_text("\n".join(lines) + "\n")
    probe = DatasetProbe()
    assert probe.symbols(str(csv)) == {"AAA", "NA", "BBB"}
    rows = probe.rows_in_window(str(csv), "date", None, None)
    assert rows == {"AAA": 1500, "NA": 1500, "BBB": 5}
    loaded = load_bars(str(csv), symbols=["AAA", "NA"])
    assert loaded.groupby("symbol").size().to_dict() == {"AAA": 1500, "NA": 1500}

    settings = qr.make_settings(tmp_path, data_roots=(f"file://{root}",))
    server, api = qr.start_api(settings, {"alice": False})
    try:
        with api.client() as c:
            spec = {**SPEC, "dataset": {"uri": f"file://{csv}", "symbols": ["AAA", "BBB"]}}
            resp = c.post("/v1/jobs", json=spec)
    finally:
        server.__exit__()
    assert resp.status_code == 201, resp.text


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    from service.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("job_id", ["", "?x=1", "../../v1/jobs", "a/b", "qr-%00",
                                    f"qr-A/../{JOB}", "qr-1"])
@pytest.mark.parametrize("command", ["status", "cancel", "resume", "logs", "results"])
def test_the_cli_refuses_an_invalid_job_id_before_any_request(
    api: Any, command: str, job_id: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Put in the URL as given, `../../v1/jobs` fetched the job list (then a KeyError
    traceback), `?x=1` a JSONDecodeError traceback, and `qr-A/../qr-B` reached job qr-B."""
    monkeypatch.setenv("QUANTRAY_API", api.url)
    monkeypatch.setenv("QUANTRAY_API_KEY", api.keys["alice"])
    code, out, err = _cli(capsys, command, job_id)
    assert code == 1 and out == "", (out, err)
    assert "is not valid: a job id is qr- and 16 lowercase hex digits" in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_cli_messages_for_a_wrong_api_url_key_or_spec_path(
    api: Any, fake_ray: tuple[Any, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    _, other_server = fake_ray  # answers 404 for /v1/... as the Ray dashboard does
    monkeypatch.setenv("QUANTRAY_API_KEY", api.keys["alice"])
    code, _, err = _cli(capsys, "--api", "ftp://x", "status", JOB)
    assert code == 1 and "http:// or https://" in err and "http://ftp://" not in err
    code, _, err = _cli(capsys, "--api", other_server, "status", JOB)
    assert code == 1 and "is it the root URL of a quantray API" in err, err
    code, _, err = _cli(capsys, "--api", f"{api.url}/docs", "status", JOB)
    assert code == 1 and "is it the root URL of a quantray API" in err, err
    code, _, err = _cli(capsys, "--api", api.url, "status", JOB)  # the API's own 404
    assert code == 1 and "not found" in err and "root URL" not in err, err
    code, _, err = _cli(capsys, "--api", api.url, "--api-key", "", "list")
    assert code == 1 and "--api-key is empty" in err, err  # it used QUANTRAY_API_KEY
    monkeypatch.setenv("QUANTRAY_API", api.url)
    with pytest.raises(SystemExit, match="is a directory"):
        _cli(capsys, "submit", str(tmp_path))
    with pytest.raises(SystemExit, match="is empty"):
        _cli(capsys, "submit", "/dev/null")


def test_serve_port_out_of_range_names_the_option(capsys: pytest.CaptureFixture) -> None:
    from service.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", "99999"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--port: 99999 is out of range" in err
    assert "QUANTRAY_PORT" not in err


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://postgres:secret@127.0.0.1:1/quantray_hfix_none",
    "postgresql+psycopg://postgres@127.0.0.1:5432/quantray_hfix_no_such_db",
])
def test_keys_and_serve_name_the_database_setting_when_it_cannot_be_opened(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A raw SQLAlchemy traceback before; now one line naming QUANTRAY_DATABASE_URL."""
    monkeypatch.setenv("QUANTRAY_HOME", str(tmp_path))
    monkeypatch.setenv("QUANTRAY_DATABASE_URL", url)
    monkeypatch.setenv("QUANTRAY_MAX_RUNNING_JOBS", "0")
    with pytest.raises(SystemExit) as exit_:
        _cli(capsys, "keys", "list")
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    code, _, serve_err = _cli(capsys, "serve", "--no-ray", "--port", "0")
    assert code == 1
    for text in (err, serve_err):
        assert "cannot open the job database QUANTRAY_DATABASE_URL=" in text, text
        assert "Traceback" not in text and len(text.splitlines()) == 1
        assert "secret" not in text


def test_conflict_answers_name_the_header_or_the_pending_stop(api: Any) -> None:
    """The 409 of an Idempotency-Key used for another spec had `errors: []`; a resume while
    a stop is pending said only "is running"."""
    store = JobStore(api.engine)
    with api.client() as c:
        headers = {"Idempotency-Key": "k-1"}
        job_id = c.post("/v1/jobs", json=SPEC, headers=headers).json()["id"]
        other = c.post("/v1/jobs", json={**SPEC, "name": "t2"}, headers=headers)
        store.transition(job_id, "queued", status="running", ray_submission_id=job_id)
        c.post(f"/v1/jobs/{job_id}/cancel")
        resume = c.post(f"/v1/jobs/{job_id}/resume")
    assert other.status_code == 409, other.text
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    assert resume.status_code == 409 and "with a stop requested" in resume.json()["message"]
