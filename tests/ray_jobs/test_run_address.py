"""`python -m ray_jobs.run` with RAY_ADDRESS set to the dashboard's URL (what `ray job
submit` takes) says what to set instead and exits 2, before any storage is touched."""

from __future__ import annotations

import pytest

from ray_jobs.run import main


@pytest.mark.parametrize("url", ["http://127.0.0.1:8265", "HTTPS://head.example:8265/"])
def test_a_dashboard_url_in_ray_address_is_refused_with_the_fix(url, monkeypatch, capsys,
                                                                tmp_path) -> None:
    monkeypatch.setenv("RAY_ADDRESS", url)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    storage = tmp_path / "store"
    assert main(["--spec", "examples/small.yaml", "--storage", storage.as_uri()]) == 2
    err = capsys.readouterr().err
    assert f"RAY_ADDRESS={url!r} is a dashboard URL" in err
    assert "GCS address host:port" in err and "Traceback" not in err
    assert not storage.exists()
