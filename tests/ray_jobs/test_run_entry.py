"""The job entrypoint's defaults (`ray_jobs.run`): where its storage goes, and how it
connects to a `ray start` head that runs with token auth."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ray_jobs import run
from ray_jobs.run import default_storage, head_requires_token, token_auth_for_existing_cluster

_AUTH = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def test_default_storage_follows_quantray_home_as_the_service_does(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("QUANTRAY_STORAGE_URI", raising=False)
    monkeypatch.setenv("QUANTRAY_HOME", str(tmp_path / "home"))
    assert default_storage() == (tmp_path / "home" / "storage").as_uri()
    monkeypatch.delenv("QUANTRAY_HOME")
    monkeypatch.chdir(tmp_path)
    assert default_storage() == (tmp_path / ".quantray" / "storage").as_uri()
    monkeypatch.setenv("QUANTRAY_STORAGE_URI", "s3://b/p")  # the explicit URI wins
    assert default_storage() == "s3://b/p"


@pytest.fixture
def auth_env(monkeypatch, tmp_path) -> Path:
    """No Ray auth settings (restored after the test: set, then deleted, so monkeypatch
    records each even where it was unset) and a HOME of its own."""
    for name in (*_AUTH, run.RAY_JOB_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # ~/.ray/auth_token under tmp_path
    # the head at RAY_ADDRESS wants a token (tests that need another answer say so)
    monkeypatch.setattr(run, "head_requires_token", lambda address: True)
    return tmp_path / ".ray" / "auth_token"


def test_a_given_cluster_is_joined_with_token_auth_when_a_token_is_available(
    auth_env, monkeypatch
) -> None:
    token_auth_for_existing_cluster()  # no address: a local ray.init decides by itself
    assert "RAY_AUTH_MODE" not in os.environ
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6380")
    token_auth_for_existing_cluster()  # no token anywhere: nothing to send
    assert "RAY_AUTH_MODE" not in os.environ
    auth_env.parent.mkdir()
    auth_env.write_text("t" * 32)
    token_auth_for_existing_cluster()  # the file `ray start` found: the head wants it
    assert os.environ["RAY_AUTH_MODE"] == "token"


@pytest.mark.parametrize("source", ["RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"])
def test_a_token_from_the_environment_counts_too(auth_env, tmp_path, monkeypatch, source) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6380")
    token_file = tmp_path / "elsewhere"
    token_file.write_text("t" * 32)
    monkeypatch.setenv(source, "t" * 32 if source == "RAY_AUTH_TOKEN" else str(token_file))
    token_auth_for_existing_cluster()
    assert os.environ["RAY_AUTH_MODE"] == "token"


def test_a_head_that_runs_without_auth_is_joined_without_a_token(auth_env, monkeypatch) -> None:
    """A head started before the token file existed runs without auth; a driver in token
    mode would refuse its own workers' calls, so the head is asked first."""
    auth_env.parent.mkdir()
    auth_env.write_text("t" * 32)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6380")
    asked = []
    monkeypatch.setattr(run, "head_requires_token", lambda address: asked.append(address))
    token_auth_for_existing_cluster()  # the probe could not tell (None): token, as before
    assert os.environ.pop("RAY_AUTH_MODE") == "token" and asked == ["127.0.0.1:6380"]
    monkeypatch.setattr(run, "head_requires_token", lambda address: False)
    token_auth_for_existing_cluster()
    assert "RAY_AUTH_MODE" not in os.environ


def test_inside_a_ray_job_the_heads_own_mode_is_kept(auth_env, monkeypatch) -> None:
    """The job supervisor starts the driver with the head's environment (RAY_AUTH_MODE
    set where the head uses a token, unset where it does not): nothing to decide."""
    auth_env.parent.mkdir()
    auth_env.write_text("t" * 32)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6380")
    monkeypatch.setenv(run.RAY_JOB_ENV, "{}")
    monkeypatch.setattr(run, "head_requires_token", lambda address: pytest.fail("asked"))
    token_auth_for_existing_cluster()
    assert "RAY_AUTH_MODE" not in os.environ


def test_the_probe_tells_a_token_head_and_an_unreachable_one(ray_cluster: str) -> None:
    """The package's cluster was started by `ray.init`, which turns token auth on."""
    assert head_requires_token(ray_cluster) is True
    assert head_requires_token("127.0.0.1:1", timeout_s=3) is None


def test_an_explicit_auth_mode_is_kept(auth_env, monkeypatch) -> None:
    auth_env.parent.mkdir()
    auth_env.write_text("t" * 32)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6380")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    token_auth_for_existing_cluster()
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


def test_ray_reads_the_token_mode_set_before_it_is_imported(tmp_path) -> None:
    """What `main` relies on: importing the entrypoint does not import ray, and a mode set
    before ray's import is the one its config holds (set after it, Ray kept 'disabled' and
    the driver failed to join a `ray start` head with InvalidAuthToken)."""

    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t" * 32)
    env = {k: v for k, v in os.environ.items() if k not in _AUTH}
    env.update(HOME=str(tmp_path), RAY_ADDRESS="127.0.0.1:6380")
    code = (
        "import sys\n"
        "from ray_jobs import run\n"
        "assert 'ray' not in sys.modules, 'the entrypoint imports ray before main'\n"
        "run.head_requires_token = lambda address: True\n"  # no head at 6380 here
        "run.token_auth_for_existing_cluster()\n"
        "assert 'ray' not in sys.modules, 'the head is asked in another process'\n"
        "from ray._raylet import AuthenticationMode, get_authentication_mode\n"
        "print(get_authentication_mode() == AuthenticationMode.TOKEN)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"


def test_a_token_path_that_names_no_file_is_refused_as_the_service_refuses_it(
    auth_env, monkeypatch, tmp_path, capsys
) -> None:
    from ray_jobs.run import main

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6380")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    assert main(["--spec", str(tmp_path / "never-read.yaml")]) == 2
    assert "RAY_AUTH_TOKEN_PATH=" in capsys.readouterr().err
    assert "RAY_AUTH_MODE" not in os.environ


def test_a_hung_exit_still_ends_the_driver_with_its_status() -> None:
    """A driver whose results are written exits with its status even when an exit handler
    (Ray's shutdown under heavy load) hangs: after the grace period it is ended anyway."""
    import time

    code = ("import atexit, time\n"
            "from ray_jobs.run import exit_promptly\n"
            "atexit.register(lambda: time.sleep(600))\n"  # a hung exit handler
            "print('results written', flush=True)\n"
            "exit_promptly(1, grace_s=1.0)\n")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - t0 < 30
    assert "results written" in done.stdout
    assert "exiting with status 1 anyway" in done.stderr


def test_a_clean_exit_keeps_its_status_and_says_nothing() -> None:

    code = "from ray_jobs.run import exit_promptly\nexit_promptly(3, grace_s=30.0)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 3 and "anyway" not in done.stderr


def test_a_driver_that_dies_of_an_exception_exits_through_the_watchdog_too() -> None:
    """The entrypoint ends the same way when `main` raises (a driver whose storage went
    down): the traceback as Python prints it (the service reads its last line), status 1."""

    code = ("import atexit, time\n"
            "from ray_jobs import run\n"
            "atexit.register(lambda: time.sleep(600))\n"  # a hung exit handler
            "run.EXIT_GRACE_S = 1.0\n"
            "run.exit_promptly.__defaults__ = (1.0,)\n"
            "def boom(argv=None):\n"
            "    raise RuntimeError('storage down')\n"
            "run.main = boom\n"
            "run.entry()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback (most recent call last):" in lines
    assert "RuntimeError: storage down" in lines and "anyway" in lines[-1]


# a driver script's lines that print "shutdown called" at each ray.shutdown()
COUNTED_SHUTDOWN = (
    "real = ray.shutdown\n"
    "def counted(*a, **k):\n"
    "    print('shutdown called', flush=True)\n"
    "    real(*a, **k)\n"
    "ray.shutdown = counted\n"
)


def _driver(script: str, ray_cluster: str) -> subprocess.CompletedProcess:
    """`script` run as a driver of the cluster (RAY_ADDRESS set, as in a Ray job)."""
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])


def test_a_disconnected_driver_does_not_connect_again(ray_cluster: str) -> None:
    """After a driver's shutdown, a Ray call of another thread (the deep runs' Tune
    controller) connected a cancelled driver to the cluster again (RAY_ADDRESS is set in
    a job): `stop.disconnect` makes such a call fail instead."""

    script = (
        "import threading, ray\n"
        "from ray_jobs.stop import disconnect\n"
        "ray.init()\n"  # RAY_ADDRESS, as in a Ray job's driver
        "disconnect(ray)\n"
        "out = []\n"
        "def late():\n"
        "    try:\n"
        "        out.append(ray.get(ray.put(1)))\n"
        "    except Exception as exc:\n"
        "        out.append(type(exc).__name__)\n"
        "t = threading.Thread(target=late); t.start(); t.join()\n"
        "print('late call:', out[0], 'connected:', ray.is_initialized())\n"
    )
    proc = _driver(script, ray_cluster)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "late call: RaySystemError connected: False" in proc.stdout, proc.stdout
    assert proc.stderr.count("Connecting to existing Ray cluster") == 1  # ray.init() only


def test_a_driver_whose_ray_thread_is_alive_exits_with_its_status_and_ends_its_actors(
    ray_cluster: str,
) -> None:
    """A stopped job's driver exits while its Tune controller thread may be inside a Ray
    call: a ray.shutdown() under it ended the driver with status 1 ("The core worker has
    already been shutdown") once in a fresh-clone CI. With a thread registered by
    `stop.calls_ray` alive, `exit_promptly` leaves Ray's shutdown to the process's exit:
    the status is kept, and the cluster still ends the driver's actors."""
    import time

    import ray

    script = (
        "import threading, time, ray\n"
        "from ray_jobs import run, stop\n"
        "ray.init()\n"  # RAY_ADDRESS, as in a Ray job's driver
        "@ray.remote(num_cpus=0)\n"
        "class Worker:\n"
        "    def work(self):\n"
        "        time.sleep(0.01)\n"
        "        return 1\n"
        "w = Worker.options(name='qr-exit-probe').remote()\n"
        "ray.get(w.work.remote())\n"
        "def controller():\n"  # in Ray calls until the process ends
        "    while True:\n"
        "        ray.get([w.work.remote() for _ in range(4)])\n"
        "stop.calls_ray(threading.Thread(target=controller, name='deep-runs',\n"
        "                                daemon=True)).start()\n"
        + COUNTED_SHUTDOWN +
        "import atexit\n"
        "atexit.unregister(real)\n"  # Ray's own exit handler, observed too
        "atexit.register(counted, _exiting_interpreter=True)\n"
        "time.sleep(1.0)\n"
        "print('results written', flush=True)\n"
        "run.exit_promptly(143, grace_s=30.0)\n"
    )
    proc = _driver(script, ray_cluster)
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert "results written" in proc.stdout and "shutdown called" not in proc.stdout
    assert "already been shutdown" not in proc.stderr
    # the driver's exit ended its actor, as a disconnect would have
    deadline = time.monotonic() + 60
    while True:
        try:
            ray.get_actor("qr-exit-probe")
        except ValueError:  # no such actor alive
            break
        assert time.monotonic() < deadline, "the exited driver's actor is still alive"
        time.sleep(0.5)


def test_a_driver_without_ray_threads_still_disconnects_at_exit(ray_cluster: str) -> None:
    """With no registered thread alive (a job that ended, or whose deep runs ended), the
    exit disconnects from Ray as before (its atexit handler, then `os._exit`)."""

    script = (
        "import threading, ray\n"
        "from ray_jobs import run, stop\n"
        "ray.init()\n"
        "t = stop.calls_ray(threading.Thread(target=lambda: None, name='deep-runs'))\n"
        "t.start(); t.join()\n"  # ended: not in Ray any more
        + COUNTED_SHUTDOWN +
        "run.exit_promptly(0, grace_s=30.0)\n"
    )
    proc = _driver(script, ray_cluster)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("shutdown called") == 1
