"""`quantray demo`'s pieces that need no server: where it keeps its state, and the Ray
dashboard URL it prints once the job is on Ray."""

from __future__ import annotations

import argparse

from service import cli_demo


class _Jobs:
    """A client whose job answers come from a list, the last one repeated."""

    def __init__(self, answers: list[dict]) -> None:
        self.answers, self.calls = answers, 0

    def job(self, job_id: str) -> dict:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]


def test_dashboard_url_waits_for_the_dispatcher_to_hand_the_job_to_ray(monkeypatch) -> None:
    monkeypatch.setattr(cli_demo.time, "sleep", lambda s: None)
    url = "http://127.0.0.1:8265/#/jobs/demo-1"
    client = _Jobs([{"status": "queued", "ray": {"dashboard_url": None}}] * 2
                   + [{"status": "running", "ray": {"dashboard_url": url}}])  # fmt: skip
    assert cli_demo._dashboard_url(client, "demo-1") == url and client.calls == 3
    # a job that ended before it reached Ray has none: no wait for it
    client = _Jobs([{"status": "failed", "ray": {"dashboard_url": None}}])
    assert cli_demo._dashboard_url(client, "demo-2") is None and client.calls == 1
    # one that stays queued: given up after the wait
    client = _Jobs([{"status": "queued", "ray": {"dashboard_url": None}}])
    assert cli_demo._dashboard_url(client, "demo-3", wait_s=0.0) is None


def test_demo_home_defaults_to_quantray_home(monkeypatch, tmp_path) -> None:
    def home_default() -> str:
        parser = argparse.ArgumentParser()
        cli_demo.register(parser.add_subparsers())
        return parser.parse_args(["demo"]).home

    monkeypatch.setenv("QUANTRAY_HOME", str(tmp_path))
    assert home_default() == str(tmp_path)
    monkeypatch.delenv("QUANTRAY_HOME")
    assert home_default() == ".quantray"


def test_a_kept_demo_whose_server_died_does_not_say_it_is_running(monkeypatch, tmp_path,
                                                                  capsys) -> None:
    """`--keep` promises a running server only while there is one: a server that exited
    (a taken port, a Ray head that did not start) is reported as exited, nothing else."""
    import subprocess
    import sys

    import pytest

    real_popen = subprocess.Popen

    def dying_server(argv, **kwargs):
        return real_popen([sys.executable, "-c", "raise SystemExit(1)"], **kwargs)

    monkeypatch.setattr(cli_demo.subprocess, "Popen", dying_server)
    parser = argparse.ArgumentParser()
    cli_demo.register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--keep", "--home", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"the server exited \(1\)"):
        args.func(args)
    assert "left running" not in capsys.readouterr().err


def test_demo_outside_the_repository_says_where_to_run_it(monkeypatch, tmp_path,
                                                          capsys) -> None:
    """`cd /tmp && quantray demo`: its default spec is relative to the repository root."""
    from service.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 2
    assert capsys.readouterr().err == (
        f"quantray demo: no such spec file 'examples/demo.yaml' in {tmp_path}: run it from the "
        "repository root, or give one with --spec FILE\n")
    assert main(["demo", "--spec", "mine.yaml"]) == 2  # a spec of one's own: no such hint
    assert capsys.readouterr().err == "quantray demo: no such spec file 'mine.yaml'\n"


def test_the_demo_server_keeps_its_state_under_its_home(monkeypatch, tmp_path,
                                                        capsys) -> None:
    """A shell still set up for a cluster and S3: the demo printed result paths under
    --home while its files went to S3 and its row to PostgreSQL. Its server is given none
    of the settings that put a job elsewhere, and the demo says which it ignored."""
    import subprocess
    import sys

    import pytest

    real_popen = subprocess.Popen
    seen: dict = {}

    def dying_server(argv, **kwargs):
        seen.update(kwargs["env"])
        return real_popen([sys.executable, "-c", "raise SystemExit(1)"], **kwargs)

    monkeypatch.setattr(cli_demo.subprocess, "Popen", dying_server)
    monkeypatch.setenv("QUANTRAY_STORAGE_URI", "s3://prod/q?endpoint_override=http://h:9000")
    monkeypatch.setenv("QUANTRAY_DATABASE_URL", "postgresql://db/prod")
    monkeypatch.setenv("QUANTRAY_RAY_ADDRESS", "http://cluster:8265")
    monkeypatch.setenv("QUANTRAY_PAGE_SIZE", "7")  # not where the job goes: kept
    for name in ("QUANTRAY_MAX_RUNNING_JOBS", "QUANTRAY_ENTRYPOINT_PYTHON"):
        monkeypatch.delenv(name, raising=False)  # the message below names exactly three
    spec = tmp_path / "demo.yaml"
    spec.write_text("name: d\n")
    parser = argparse.ArgumentParser()
    cli_demo.register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--spec", str(spec), "--home", str(tmp_path / "h")])
    with pytest.raises(SystemExit, match="the server exited"):
        args.func(args)
    assert not {"QUANTRAY_STORAGE_URI", "QUANTRAY_DATABASE_URL", "QUANTRAY_RAY_ADDRESS"} & set(seen)
    assert seen["QUANTRAY_HOME"] == str(tmp_path / "h") and seen["QUANTRAY_PAGE_SIZE"] == "7"
    assert (f"its state stays under {tmp_path / 'h'}: ignoring QUANTRAY_RAY_ADDRESS, "
            "QUANTRAY_STORAGE_URI, QUANTRAY_DATABASE_URL from the environment"
            in capsys.readouterr().err)
