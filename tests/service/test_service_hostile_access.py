"""Hostile reads over real HTTP: bad auth, artifact/plot paths that try to leave the job,
bad list queries. Each is refused with the right 4xx and a message naming the problem."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest

SPEC: dict[str, Any] = {
    "name": "t1",
    "dataset": {"uri": "sample:sp500", "symbols": 2},
    "models": ["ols", "lstm"],
}
Ctx = tuple[Any, str, Path]  # (conftest.Api, an existing job id of alice, the data root)


def _assert_error(resp: Any, status: int, code: str, text: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == code and text in body["message"], body


@pytest.mark.parametrize(
    ("headers", "text"),
    [
        ({}, "missing Authorization"),
        ({"Authorization": "Basic YWxpY2U6cHc="}, "Bearer"),
        ({"Authorization": "Bearer qr_0123456789abcdef_notarealsecretnotarealsecret"}, "invalid"),
        ({"Authorization": "Bearer garbage"}, "invalid"),
    ],
    ids=["missing", "basic-scheme", "unknown-key", "malformed-key"],
)
def test_bad_auth_is_401(hostile: Ctx, headers: dict, text: str) -> None:
    api, job_id, _ = hostile
    before = api.job_count()
    with api.client(None) as c:
        for resp in (
            c.post("/v1/jobs", json=SPEC, headers=headers),
            c.get(f"/v1/jobs/{job_id}", headers=headers),
        ):
            _assert_error(resp, 401, "unauthorized", text)
            assert resp.headers["www-authenticate"] == "Bearer"
    assert api.job_count() == before


@pytest.mark.parametrize(
    "raw_path",
    [
        "../spec.json",
        "..%2f..%2fspec.json",
        "%2e%2e/%2e%2e/spec.json",
        "%252e%252e/spec.json",
        "AAA/..%5c..%5cspec.json",
        "%2fetc%2fpasswd",
        "AAA/./ols/model.pt",
        "a/" * 3000 + "x",  # a path the file system cannot stat: was a 503 "storage down"
    ],
    ids=lambda raw: raw if len(raw) < 40 else "too-long",
)
def test_artifact_path_cannot_escape_the_job(hostile: Ctx, raw_path: str) -> None:
    """Sent byte-for-byte (http.client does not normalise `..`): a 400 naming the problem."""
    api, job_id, _ = hostile
    conn = http.client.HTTPConnection("127.0.0.1", int(api.url.rsplit(":", 1)[1]), timeout=10)
    conn.request(
        "GET",
        f"/v1/jobs/{job_id}/artifacts/{raw_path}",
        headers={"Authorization": f"Bearer {api.keys['alice']}"},
    )
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 400, body
    assert body["message"].startswith("artifact path"), body
    assert body["errors"][0]["field"] == "path.path"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page_size=0", "page_size"),
        ("page_size=100000", "page_size"),
        ("status=bogus", "status"),
        ("page=-1", "page"),
    ],
)
def test_bad_list_query_is_422(hostile: Ctx, query: str, field: str) -> None:
    api, _, _ = hostile
    with api.client() as c:
        resp = c.get(f"/v1/jobs?{query}")
    assert resp.status_code == 422, resp.text
    assert any(field in e["field"] for e in resp.json()["errors"]), resp.json()


def test_plot_name_must_be_plain_png(hostile: Ctx) -> None:
    api, job_id, _ = hostile
    with api.client() as c:
        for name in ("plot.svg", ".hidden.png", "a%5cb.png", "%2e%2e.png"):
            resp = c.get(f"/v1/jobs/{job_id}/plots/{name}")
            assert resp.status_code == 400, resp.text
            assert "plot name" in resp.json()["message"]
        # An encoded slash decodes to a path the plot route never matches.
        resp = c.get(f"/v1/jobs/{job_id}/plots/..%2fspec.json")
        assert resp.status_code == 404 and resp.json()["error"] == "not_found"


def test_links_in_the_storage_do_not_lead_out_of_the_job(api: Any, tmp_path: Path) -> None:
    """Symlinks placed in a job's storage (by hand, or by anything else that writes there)
    pointing at files or folders outside the job are neither listed nor served by the
    artifact, plot and summary routes; a link inside the job still is."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwd").write_text("root:x:0:0 SECRET")
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
    job = api.storage / "jobs" / job_id
    unit = job / "units" / "AAA" / "ols" / "f0"
    unit.mkdir(parents=True)
    (unit / "metrics.json").write_text('{"ok": 1}')
    (unit / "evil.json").symlink_to(secret / "passwd")
    (unit / "same.json").symlink_to(unit / "metrics.json")  # stays in the job: served
    (job / "units" / "LEAK").symlink_to(secret)
    plots = job / "results" / "plots"
    plots.mkdir(parents=True)
    (plots / "evil.png").symlink_to(secret / "passwd")
    (job / "results" / "summary.json").symlink_to(secret / "passwd")
    with api.client() as c:
        listed = c.get(f"/v1/jobs/{job_id}/artifacts").json()["files"]
        evil = c.get(f"/v1/jobs/{job_id}/artifacts/AAA/ols/f0/evil.json")
        via_dir = c.get(f"/v1/jobs/{job_id}/artifacts/LEAK/passwd")
        prefix = c.get(f"/v1/jobs/{job_id}/artifacts", params={"prefix": "LEAK"})
        same = c.get(f"/v1/jobs/{job_id}/artifacts/AAA/ols/f0/same.json")
        plot = c.get(f"/v1/jobs/{job_id}/plots/evil.png")
        plot_list = c.get(f"/v1/jobs/{job_id}/plots").json()
        summary = c.get(f"/v1/jobs/{job_id}/summary")
    assert [f["path"] for f in listed] == ["AAA/ols/f0/metrics.json", "AAA/ols/f0/same.json"]
    for resp in (evil, via_dir, prefix, plot, summary):
        assert resp.status_code == 404, resp.text
        assert "SECRET" not in resp.text and resp.json()["error"] == "not_found"
    assert same.status_code == 200 and same.json() == {"ok": 1}
    assert plot_list == {"plots": []}
