"""Job entrypoint: `python -m ray_jobs.run --spec FILE | --job-id ID [--storage URI]`.

Runs on the Ray cluster in `RAY_ADDRESS` (inside a Ray job it is set for us), or starts a
local Ray when none is given. Exit status: 0 all units done, 1 some units failed (partial
results kept), 2 bad input (spec, storage, job id, a dataset that cannot be read or holds no
usable symbol).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from ray_jobs.ray_token import find_ray_token


def default_storage() -> str:
    """QUANTRAY_STORAGE_URI, else $QUANTRAY_HOME/storage (home default ./.quantray), as the
    service resolves it."""
    home = os.environ.get("QUANTRAY_HOME") or ".quantray"
    return os.environ.get("QUANTRAY_STORAGE_URI") or (
        Path(home).expanduser() / "storage"
    ).resolve().as_uri()


def check_ray_address() -> None:
    """A ValueError for a RAY_ADDRESS this driver cannot connect to: the dashboard's URL
    (http://host:8265) is what `ray job submit` and the service take, while a driver joins
    the cluster at the head's GCS address (Ray's own error is a bare "Invalid Ray
    address" traceback)."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if address.lower().startswith(("http://", "https://")):
        raise ValueError(
            f"RAY_ADDRESS={address!r} is a dashboard URL (for `ray job submit` and the "
            "service's QUANTRAY_RAY_ADDRESS); this entrypoint connects to the head itself: "
            "set RAY_ADDRESS to its GCS address host:port (the --port of `ray start --head`, "
            "e.g. 127.0.0.1:6380) or to auto, or submit the job through the service"
        )


def token_auth_for_existing_cluster() -> None:
    """Connect to a given cluster (RAY_ADDRESS host:port) in the head's auth mode: a head
    started while a token was available (~/.ray/auth_token, RAY_AUTH_TOKEN[_PATH]) runs
    with token auth, and Ray 2.60's `ray.init(address=...)` does not turn it on by itself
    (it fails with "RAY_AUTH_MODE is currently 'disabled'"). A head started before the
    token existed runs without auth, and a driver in token mode then refuses its own
    workers' calls ("Missing authorization header": every actor dies). So when a token is
    found (`find_ray_token`; a RAY_AUTH_TOKEN_PATH that names no file is a ValueError),
    the head is asked (`head_requires_token`) and token mode is set unless it needs none.
    An explicit RAY_AUTH_MODE is kept; inside a Ray job the head's mode is already in the
    environment, and with `auto` Ray follows the local token itself. Call it before `ray`
    is imported: Ray reads RAY_AUTH_MODE into its config on import."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if (not address or address == "auto" or "RAY_AUTH_MODE" in os.environ
            or RAY_JOB_ENV in os.environ):  # fmt: skip
        return
    if find_ray_token(os.environ, Path.home()) is None:
        return
    if head_requires_token(address) is not False:  # True, or no answer: ray.init will say
        os.environ["RAY_AUTH_MODE"] = "token"


RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for a job's driver
AUTH_PROBE_TIMEOUT_S = 15.0  # an unreachable GCS is retried for ~40 s
_AUTH_PROBE = """
import sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    GcsClient(address=sys.argv[1])
except AuthenticationError:
    sys.exit(3)
"""


def head_requires_token(address: str, timeout_s: float = AUTH_PROBE_TIMEOUT_S) -> bool | None:
    """Whether the Ray head at GCS `address` refuses a client without a token (True) or
    takes one (False); None when the probe cannot tell (no answer in `timeout_s`, or
    another error). A fresh process asks, with auth off: the mode is fixed at import."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    try:
        done = subprocess.run([sys.executable, "-c", _AUTH_PROBE, address], env=env,
                              capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return None
    return {0: False, 3: True}.get(done.returncode)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ray_jobs.run", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", help="job spec file (.yaml, .yml or .json)")
    src.add_argument("--job-id", help="run (or resume) the job whose spec.json is in storage")
    p.add_argument("--storage", default=None, help="storage URI (default: QUANTRAY_STORAGE_URI "
                   "or $QUANTRAY_HOME/storage, home ./.quantray)")
    p.add_argument("--name", dest="job_name", default=None,
                   help="with --spec: the job id (default: spec name + spec fingerprint)")
    p.add_argument("--smoke-test", action="store_true", help="a tiny version of the job")
    p.add_argument("--attempt", type=attempt_number, default=None,
                   help="the service's attempt number of this run of the job (0 first, +1 per "
                   "resume), written into progress.json so a reader can tell it from the "
                   "previous attempt's (default: the first one without a stored driver log, "
                   "so a rerun keeps the earlier runs' logs/driver-N.log)")
    return p.parse_args(argv)


def attempt_number(text: str) -> int:
    """argparse type of an attempt number (0 first, +1 per resume); `quantray logs` too."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number, 0 or more")
    return value


def next_attempt(storage) -> int:
    """The attempt number of a run started without --attempt (directly, not by the
    service): one past the job's stored driver logs, 0 for a new job. Rerunning a job id
    (a resume, or a refused spec) then keeps every earlier run's log."""
    from ray_jobs.driver_log import log_path

    try:
        names = set(storage.list_dir("logs", missing_ok=True))
    except Exception:  # noqa: BLE001 - unreadable storage fails later, with its own message
        return 0
    attempt = 0
    while log_path(attempt).rsplit("/", 1)[-1] in names:
        attempt += 1
    return attempt


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stdout)
    args = parse_args(argv)
    try:
        check_ray_address()
        token_auth_for_existing_cluster()  # before ray is imported: it reads the mode then
    except ValueError as exc:  # a dashboard URL, or a RAY_AUTH_TOKEN_PATH that names no file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ray_jobs.spec import JobSpec, SpecError, check_against_registry
    from ray_jobs.storage import JobStorage, StorageError

    storage_uri = args.storage or default_storage()
    try:
        if args.spec:
            text = Path(args.spec).read_text(encoding="utf-8")
            spec = (JobSpec.from_json(text) if args.spec.endswith(".json")
                    else JobSpec.from_yaml(text))
            if problems := spec.split.new_spec_problems():  # a new spec's, not a stored one's
                raise SpecError(problems)
            if args.smoke_test:
                spec = spec.smoke()
            job_id = args.job_name or f"{spec.name}-{spec.fingerprint()[:8]}"
            storage = JobStorage(storage_uri, job_id)
        else:
            storage = JobStorage(storage_uri, args.job_id)
            spec = JobSpec.from_dict(storage.read_spec())
            if args.smoke_test:
                spec = spec.smoke()
        check_against_registry(spec)  # bad override values fail here, not in every unit
    except SpecError as exc:
        print(f"error: invalid spec: {exc}", file=sys.stderr)
        return 2
    except (OSError, StorageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from ray_jobs.driver_log import StoredLog

    attempt = args.attempt if args.attempt is not None else next_attempt(storage)
    # The log also goes to the job's storage: Ray forgets it when its head restarts.
    stored = StoredLog(storage, attempt)
    root = logging.getLogger()
    stored.setFormatter(root.handlers[0].formatter if root.handlers else None)
    root.addHandler(stored)
    stored.start()
    try:
        return _run(spec, storage, attempt, stored)
    except BaseException as exc:  # the traceback goes to stderr as usual, and is stored
        stored.emit(logging.LogRecord("quantray.run", logging.ERROR, __file__, 0,
                                      "the driver failed", None, (type(exc), exc,
                                                                 exc.__traceback__)))
        raise
    finally:
        root.removeHandler(stored)
        stored.close()


def _run(spec, storage, attempt: int, stored: logging.Handler) -> int:
    import ray

    from ray_jobs.driver import JobInputError, JobSpecMismatch, run_job
    from ray_jobs.stop import JobCancelled, request_stop

    def say(text: str, *, error: bool = False) -> None:  # printed, and kept in the stored log
        print(text, file=sys.stderr if error else sys.stdout)
        stored.emit(logging.LogRecord("quantray.run", logging.ERROR if error else logging.INFO,
                                      __file__, 0, text, None, None))

    ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=True)

    for sig in (signal.SIGTERM, signal.SIGINT):  # `ray job stop` / the API's cancel: SIGTERM
        signal.signal(sig, request_stop)
    try:
        summary = run_job(spec, storage, attempt=attempt)
    except (JobSpecMismatch, JobInputError) as exc:
        say(f"error: {exc}", error=True)
        return 2
    except JobCancelled as exc:
        say(f"job {storage.job_id}: {exc}; the finished units' results are at "
            f"{storage.uri_of('results')}")
        return 128 + exc.signum
    say(f"job {storage.job_id}: results at {storage.uri_of('results')}")
    return 1 if summary["failed_units"] else 0


# How long the driver may take to disconnect from Ray and let Python finalize once the job's
# results are written. Under heavy load (1-minute load 50-77 on 2 cores) a driver that had
# written `succeeded` was still alive 300 s later, so the Jobs API (and the service) still
# saw it running; nothing it could still do matters then.
EXIT_GRACE_S = float(os.environ.get("QUANTRAY_EXIT_GRACE_S", "60"))


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def exit_promptly(code: int, grace_s: float = EXIT_GRACE_S) -> None:
    """Exit with `code`: disconnect from Ray and run the exit handlers as usual, but if that
    takes more than `grace_s` (a hung shutdown or exit handler), end the process anyway
    with the same status, its output flushed. The interpreter's own teardown after the
    handlers is skipped: a stopped driver whose results were written died there of a
    segfault in native code (exit status -11 instead of 143, once in a fresh-clone CI)."""
    import atexit
    import threading

    def force() -> None:
        print(f"quantray: the driver's exit took over {grace_s:.0f} s (Ray's shutdown or an "
              f"exit handler hung): exiting with status {code} anyway", file=sys.stderr)
        _flush_stdio()
        os._exit(code)

    timer = threading.Timer(grace_s, force)
    timer.daemon = True  # runs on while finalization waits for other threads
    timer.start()
    if "ray" in sys.modules:
        from ray_jobs.stop import disconnect, threads_in_ray

        ray = sys.modules["ray"]
        if threads_in_ray():  # a stopped job's Tune controller: see stop.threads_in_ray
            atexit.unregister(ray.shutdown)  # the process's exit disconnects it
        else:
            try:
                disconnect(ray)
            except Exception as exc:  # noqa: BLE001 - exiting anyway; say why it was not clean
                print(f"quantray: ray.shutdown() at exit: {exc}", file=sys.stderr)
    try:
        atexit._run_exitfuncs()  # as sys.exit would (logging's flush among them)
    finally:
        _flush_stdio()
        os._exit(code)


def entry() -> None:
    """The entrypoint: `main`, ended by `exit_promptly` however it ends (a driver that dies
    of an exception, e.g. its storage down, exits the same way, its traceback printed)."""
    import faulthandler
    import traceback

    faulthandler.enable()  # a crash in native code (Ray's core worker) prints every thread
    try:
        code = main()
    except SystemExit as exc:  # argparse's usage errors (2) and --help (0)
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - printed as Python would, then the same exit
        traceback.print_exc()
        code = 1
    exit_promptly(code)


if __name__ == "__main__":
    entry()
