"""The driver's log copy in storage (`ray_jobs.driver_log.StoredLog`), without Ray."""

from __future__ import annotations

import logging

from ray_jobs.driver_log import StoredLog, log_path


class _Sink:
    def __init__(self, fail: int = 0) -> None:
        self.files: dict[str, bytes] = {}
        self.writes = 0
        self.fail = fail

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("endpoint down")
        self.files[rel] = data
        self.writes += 1


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test.driver_log.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def test_records_are_stored_per_attempt_and_unchanged_logs_are_not_rewritten(capsys) -> None:
    sink = _Sink(fail=1)
    stored = StoredLog(sink, attempt=2, every_s=60)
    stored.setFormatter(logging.Formatter("%(name)s %(message)s"))
    log = _logger(stored)
    log.info("progress 1/4")
    log.debug("not kept: below INFO")
    stored.flush()  # the storage is down: reported once, retried at the next flush
    assert sink.files == {} and "could not store the driver log" in capsys.readouterr().err
    stored.flush()
    assert log_path(2) == "logs/driver-2.log"
    assert sink.files["logs/driver-2.log"].decode().endswith("progress 1/4\n")
    stored.flush()
    assert sink.writes == 1  # nothing new: not written again
    log.warning("unit failed")
    stored.close()
    assert sink.writes == 2 and sink.files[log_path(2)].decode().splitlines()[-1].endswith(
        "unit failed")


def test_a_long_log_keeps_its_latest_lines_and_says_how_many_went() -> None:
    sink = _Sink()
    stored = StoredLog(sink, attempt=0, every_s=60, max_bytes=1 << 20)
    log = _logger(stored)
    for i in range(30_000):
        log.info("line %05d %s", i, "x" * 40)
    stored.close()
    text = sink.files[log_path(0)].decode()
    assert len(text) <= (1 << 20) + 200
    first, *rest = text.splitlines()
    assert first.startswith("[") and "earlier lines dropped" in first
    assert rest[-1].startswith("line 29999") and int(first[1:].split()[0]) + len(rest) == 30_000


def test_the_first_copy_is_written_within_seconds_of_the_start() -> None:
    """A driver killed in its first seconds (before `every_s`) still leaves its log: the
    chaos probe's drivers killed during data preparation left none with a 10 s period."""
    import time

    sink = _Sink()
    stored = StoredLog(sink, attempt=0, every_s=60).start()
    log = _logger(stored)
    log.info("preparing 8 symbols")
    deadline = time.monotonic() + 10
    while not sink.files and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert sink.files[log_path(0)].decode().endswith("preparing 8 symbols\n")
    finally:
        stored.close()


def test_a_units_error_is_the_exceptions_last_line_not_its_traceback() -> None:
    """A failed Tune search's error (its str carries the trial's formatted traceback, ~1.5
    kB) became every unit's `error`, the reason at its very end; now its last line."""
    from ray_jobs.driver import error_reason

    tune_error = RuntimeError(
        "Traceback (most recent call last):\n"
        '  File "/x/ray/tune/execution/tune_controller.py", line 1223, in _on_result\n'
        "    raise ValueError(\n"
        + "  frame\n" * 40
        + "ValueError: Trial returned a result which did not include the specified "
        "metric(s) `val_loss`\n")  # fmt: skip
    assert error_reason(tune_error) == ("ValueError: Trial returned a result which did not "
                                        "include the specified metric(s) `val_loss`")
    assert error_reason(ValueError("NaN loss at epoch 3")) == "NaN loss at epoch 3"
    assert len(error_reason(ValueError("x" * 5000))) == 1000
    assert error_reason(KeyError()) == "KeyError"


def test_a_dataset_the_cluster_may_not_read_says_whose_credentials_count() -> None:
    """The server checked an S3 dataset with its own credentials and the job then failed
    on the cluster with pyarrow's bare ACCESS_DENIED: the message now says which process's
    credentials a job uses and where to set them."""
    from ray_jobs.driver import _input_error
    from ray_jobs.progress import ProgressTracker

    tracker = ProgressTracker(job_id="j", attempt=0)
    denied = OSError("When getting information for key 'bars.parquet' in bucket 'qr-data': "
                     "AWS Error ACCESS_DENIED during HeadObject operation: No response body.")
    message = str(_input_error(tracker, denied))
    assert message.startswith("the job's dataset cannot be used: When getting information")
    assert "credentials of the Ray cluster's processes" in message
    assert "QUANTRAY_RAY_RUNTIME_ENV" in message
    other = str(_input_error(tracker, ValueError("dataset.symbols: 600 symbols requested")))
    assert "credentials" not in other


def test_a_dataset_the_workers_may_not_read_says_their_credentials_are_missing() -> None:
    """The driver (run from a shell with credentials) read the dataset, and the chunk tasks
    on a cluster started without them met ACCESS_DENIED: the data error says that the
    workers' credentials are what is missing, and where to set them."""
    from ray_jobs.storage import worker_access_hint

    denied = ("OSError: When reading information for key 'hive/AAPL.parquet' in bucket 'd': "
              "AWS Error ACCESS_DENIED during GetObject operation: No response body.")
    hinted = worker_access_hint(denied)
    assert hinted.startswith(denied + "; the job's driver could read it, so the Ray workers' "
                             "own credentials are missing or not allowed: set AWS_ACCESS_KEY_ID")
    assert "where the Ray head and workers run" in hinted and "QUANTRAY_RAY_RUNTIME_ENV" in hinted
    short = "ValueError: AAPL has 40 rows after validation, fewer than the 300 needed"
    assert worker_access_hint(short) == short
