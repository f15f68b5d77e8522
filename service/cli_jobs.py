"""`quantray submit|status|list|results|summary|plots|artifacts|cancel|resume|logs|models`:
HTTP clients of the API.

The API is `--api` or QUANTRAY_API (default http://127.0.0.1:8000; a trailing /v1 is
dropped); the key is `--api-key` or QUANTRAY_API_KEY. Both options may also come before the
command (service/cli.py). Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLL_S = 2.0
INTERVAL_S = (0.2, 60.0)  # bounds of --interval
RETRY_FOR_S = 60.0  # --wait / logs -f: how long an unreachable API is retried
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 5.0)  # then 5 s each
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")


def _bounded(kind: type[int] | type[float], low: float, high: float | None = None, *,
             unit: str = "", advice: str | None = None) -> Callable[[str], Any]:
    """An argparse type: a `kind` number in [low, high] (no upper bound when high is None);
    its errors say what to give instead (`advice`)."""
    noun = "a whole number" if kind is int else f"a number{' of seconds' if unit else ''}"
    why = f"below {low:g}" if high is None else "out of range"
    advice = advice or (f"give {low:g} or more" if high is None else f"give {low:g} to {high:g}")

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not (low <= value and (high is None or value <= high)):  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text}{unit} is {why}: {advice}")
        return value

    return parse


# --interval: seconds between polls; --page, --page-size: 1 or more
_interval = _bounded(float, *INTERVAL_S, unit=" s",
                     advice=f"poll every {INTERVAL_S[0]:g} to {INTERVAL_S[1]:g} seconds")
_positive = _bounded(int, 1)


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--api", help="API URL (default: $QUANTRAY_API or http://127.0.0.1:8000)")
    parent.add_argument("--api-key", help="API key (default: $QUANTRAY_API_KEY)")
    return parent


def register(subparsers: argparse._SubParsersAction) -> None:
    from ray_jobs.run import attempt_number  # stdlib only, as this module

    if "submit" in subparsers.choices:  # registered already (several names map here)
        return
    common = _common()
    p = subparsers.add_parser("submit", parents=[common], help="submit a job spec (YAML/JSON)")
    p.add_argument("spec", help="spec file (.yaml/.yml/.json), or - for YAML on stdin")
    p.add_argument("--wait", action="store_true", help="follow it with a progress bar")
    p.add_argument("--idempotency-key", help="retry-safe key: resubmitting returns the same job")
    p.add_argument("--interval", type=_interval, default=POLL_S,
                   help=f"poll seconds for --wait ({INTERVAL_S[0]:g}-{INTERVAL_S[1]:g}, "
                   f"default {POLL_S:g})")  # fmt: skip
    p.set_defaults(func=_submit)

    p = subparsers.add_parser("status", parents=[common], help="show one job")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    p.set_defaults(func=_status)

    p = subparsers.add_parser("list", parents=[common], help="list your jobs, newest first")
    p.add_argument("--status", action="append", choices=STATUSES,
                   help="only jobs in this status (repeatable: in any of them)")
    p.add_argument("--page", type=_positive, default=1)
    p.add_argument("--page-size", type=_positive,
                   help="jobs per page (default: the server's QUANTRAY_PAGE_SIZE)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)

    p = subparsers.add_parser("results", parents=[common], help="a job's leaderboard")
    p.add_argument("job_id")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--symbol", action="append", help="filter (repeatable)")
    p.add_argument("--model", action="append", help="filter (repeatable)")
    p.add_argument("--horizon", action="append", type=int, help="filter (repeatable)")
    p.add_argument("--split", action="append", choices=("val", "test"),
                   help="filter (repeatable)")
    p.add_argument("--fold", action="append", type=int, help="filter (repeatable)")
    p.add_argument("--sort", metavar="COLUMN",
                   help="sort by a leaderboard column, '-' first for descending: --sort=-macro_f1")
    p.add_argument("--limit", type=_positive, help="at most this many rows")
    p.add_argument("--offset", type=_bounded(int, 0), default=0, help="skip this many rows first")
    p.set_defaults(func=_results)

    p = subparsers.add_parser("summary", parents=[common], help="a job's summary: the mean "
                              "over symbols per model x horizon, beside the baseline")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="print summary.json as it is")
    p.set_defaults(func=_summary)

    p = subparsers.add_parser("plots", parents=[common], help="a job's plots: their names, or "
                              "the PNG files with --out")
    p.add_argument("job_id")
    p.add_argument("--out", metavar="DIR", help="save every plot into DIR (created)")
    p.set_defaults(func=_plots)

    p = subparsers.add_parser("artifacts", parents=[common], help="a job's stored files (models, "
                              "predictions, metrics): list them, or fetch one with --get")
    p.add_argument("job_id")
    p.add_argument("--prefix", default="", help="only the files under this path, e.g. AAPL/lstm")
    p.add_argument("--get", metavar="PATH", help="fetch this file (a path the listing shows)")
    p.add_argument("--out", metavar="FILE", help="with --get: save it here (default: stdout)")
    p.set_defaults(func=_artifacts)

    for name, helptext in (("cancel", "stop a job (keeps partial results)"),
                           ("resume", "requeue a failed/cancelled/interrupted job")):  # fmt: skip
        p = subparsers.add_parser(name, parents=[common], help=helptext)
        p.add_argument("job_id")
        p.set_defaults(func=_cancel if name == "cancel" else _resume)

    p = subparsers.add_parser("logs", parents=[common], help="the job driver's log (from Ray, "
                              "or the copy the job stored when Ray has none)")
    p.add_argument("job_id")
    p.add_argument("--attempt", type=attempt_number, default=None,
                   help="an earlier attempt's log (0 first, +1 per resume of a run that reached "
                   "Ray; default the latest)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    p.add_argument("--interval", type=_interval, default=POLL_S,
                   help=f"poll seconds for -f ({INTERVAL_S[0]:g}-{INTERVAL_S[1]:g}, "
                   f"default {POLL_S:g})")  # fmt: skip
    p.set_defaults(func=_logs)

    p = subparsers.add_parser("models", parents=[common], help="model kinds and presets")
    p.add_argument("name", nargs="?", help="one model: its presets' settings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_models)


def _run(args: argparse.Namespace, body: Any) -> int:
    """Call `body(client)`; API errors become a message on stderr and exit code 1."""
    from service.api_client import ApiClient, ApiClientError

    api = args.api or getattr(args, "global_api", None)
    # "" is a value given (and refused by the client), not "use QUANTRAY_API_KEY"
    api_key = args.api_key if args.api_key is not None else getattr(args, "global_api_key", None)
    try:
        with ApiClient(api, api_key) as client:
            return int(body(client) or 0)
    except ApiClientError as exc:
        print(f"quantray {args.command}: {exc}", file=sys.stderr)
        return 1
    # a reader that went away (`quantray results ID | head`): `service.cli.main`, 141 as
    # for every command


def _read_spec(path: str) -> tuple[bytes, str]:
    if path == "-":
        return sys.stdin.buffer.read(), "application/yaml"
    file = Path(path)
    if not file.exists():
        raise SystemExit(f"quantray submit: no such spec file {path!r}")
    if file.is_dir():
        raise SystemExit(f"quantray submit: {path!r} is a directory: give a spec file "
                         "(.yaml, .yml or .json) in it")
    try:  # a regular file, or a pipe (`<(...)`)
        body = file.read_bytes()
    except OSError as exc:
        raise SystemExit(f"quantray submit: cannot read {path!r}: {exc.strerror or exc}") from None
    if not body.strip():
        raise SystemExit(f"quantray submit: {path!r} is empty: a spec needs at least name, "
                         "dataset and models (see examples/small.yaml)")
    kind = "application/json" if file.suffix.lower() == ".json" else "application/yaml"
    return body, kind


def _submit(args: argparse.Namespace) -> int:
    body, content_type = _read_spec(args.spec)

    def go(client: Any) -> int:
        job = client.submit(body, content_type, args.idempotency_key)
        print(job["id"])
        sys.stdout.flush()
        return _wait(client, job["id"], args.interval) if args.wait else 0

    return _run(args, go)


def _following(job_id: str, call: Callable[[], int]) -> int:
    """`call()` that follows a job; Ctrl-C does not stop the job: say how to go on, and
    exit 130."""
    try:
        return call()
    except KeyboardInterrupt:
        sys.stderr.write(f"\njob {job_id} keeps running; `quantray status {job_id}` to follow "
                         f"it, `quantray cancel {job_id}` to stop it\n")  # fmt: skip
        return 130


def _retrying(call: Any, job_id: str) -> Any:
    """`call()`, retried with backoff for up to RETRY_FOR_S while the API cannot be reached
    (restarted, briefly down): the job goes on meanwhile. Other errors are not retried."""
    from service.api_client import ApiUnreachable

    deadline, attempt = None, 0
    while True:
        try:
            return call()
        except ApiUnreachable as exc:
            now = time.monotonic()
            if deadline is None:
                deadline = now + RETRY_FOR_S
                sys.stderr.write(f"\n{exc}\nretrying for up to {RETRY_FOR_S:g} s (job {job_id} "
                                 "keeps running meanwhile)\n")  # fmt: skip
            if now >= deadline:
                raise
            delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
            attempt += 1
            time.sleep(min(delay, deadline - now))


def _wait(client: Any, job_id: str, interval: float) -> int:
    """Poll until the job is final; progress bar on stderr; 0 only if it succeeded; 130
    on Ctrl-C (the job goes on)."""
    return _following(job_id, lambda: _follow(client, job_id, interval))


def _follow(client: Any, job_id: str, interval: float) -> int:
    from service.cli_format import FINAL_STATUSES, LOG_LINE_MAX, wait_line

    tty = sys.stderr.isatty()
    last = ""
    while True:
        job = _retrying(lambda: client.job(job_id), job_id)
        line = wait_line(job, _columns() - 1 if tty else LOG_LINE_MAX)
        if tty:
            sys.stderr.write("\r" + line.ljust(len(last)))
        elif line != last:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        last = line
        if job["status"] in FINAL_STATUSES:
            if tty:
                sys.stderr.write("\n")
            if job.get("message"):
                sys.stderr.write(f"{job['status']}: {job['message']}\n")
            return 0 if job["status"] == "succeeded" else 1
        time.sleep(interval)


def _columns() -> int:
    """The width of the terminal on stderr, where `--wait` draws its line (stdout may be a
    pipe: `quantray submit --wait x.yaml > id`)."""
    from service.cli_format import LINE_MAX

    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns or LINE_MAX + 1
    except (OSError, ValueError):  # not a terminal after all (stderr replaced)
        return LINE_MAX + 1


def _status(args: argparse.Namespace) -> int:
    from service.cli_format import job_summary

    def go(client: Any) -> None:
        job = client.job(args.job_id)
        print(json.dumps(job, indent=2) if args.json else job_summary(job))

    return _run(args, go)


def _list(args: argparse.Namespace) -> int:
    from service.cli_format import table

    def go(client: Any) -> None:
        page = client.jobs(status=args.status, page=args.page, page_size=args.page_size)
        if args.json:
            print(json.dumps(page, indent=2))
            return
        print(table(page["items"], ("id", "name", "status", "owner", "created_at")))
        shown = len(page["items"])
        more = f" (next: --page {page['page'] + 1})" if page.get("next") else ""
        print(f"page {page['page']}: {shown} of {page['total']} jobs{more}", file=sys.stderr)

    return _run(args, go)


def _results(args: argparse.Namespace) -> int:
    from service.cli_format import RESULT_COLUMNS, table

    def go(client: Any) -> None:
        filters = {"symbol": args.symbol, "model": args.model, "horizon": args.horizon,
                   "split": args.split, "fold": args.fold, "sort": args.sort,
                   "limit": args.limit, "offset": args.offset}  # fmt: skip
        resp = client.results(args.job_id, filters, csv=args.format == "csv")
        if args.format == "csv":
            sys.stdout.write(resp.text)
            notes = [resp.headers["quantray-unmatched"]] if "quantray-unmatched" in resp.headers \
                else []  # fmt: skip
        else:
            body = resp.json()
            rows, notes = body["rows"], [u["message"] for u in body.get("unmatched") or []]
            if args.format == "json":
                print(json.dumps(rows, indent=2))
            else:
                present = [c for c in RESULT_COLUMNS if any(c in r for r in rows)]
                print(table(rows, present) if rows else "(no rows)")
        for note in notes:  # a filter value the leaderboard does not have
            print(f"note: {note}", file=sys.stderr)
        total = resp.headers.get("quantray-total-rows") if args.format == "csv" \
            else resp.json().get("total")  # fmt: skip
        if args.limit and total is not None and args.offset + args.limit < int(total):
            print(f"rows {args.offset + 1}-{args.offset + args.limit} of {total} "
                  f"(next: --offset {args.offset + args.limit})", file=sys.stderr)

    return _run(args, go)


def _summary(args: argparse.Namespace) -> int:
    from service.cli_format import summary_text

    def go(client: Any) -> None:
        summary = client.summary(args.job_id)
        print(json.dumps(summary, indent=2) if args.json else summary_text(summary))

    return _run(args, go)


def _plots(args: argparse.Namespace) -> int:
    def go(client: Any) -> int:
        names = client.plots(args.job_id)
        if not args.out:
            print("\n".join(names) if names else "(no plots)")
            return 0
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"quantray plots: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        for name in names:
            (out / name).write_bytes(client.plot(args.job_id, name))
            print(out / name)
        return 0

    return _run(args, go)


def _artifacts(args: argparse.Namespace) -> int:
    from service.cli_format import table

    def go(client: Any) -> int:
        if args.get is None:
            if args.out:
                print("quantray artifacts: --out goes with --get PATH", file=sys.stderr)
                return 2
            files = client.artifacts(args.job_id, args.prefix)
            print(table(files, ("path", "size")) if files else "(no files)")
            return 0
        data = client.artifact(args.job_id, args.get)
        if args.out:
            try:
                Path(args.out).write_bytes(data)
            except OSError as exc:
                print(f"quantray artifacts: --out {args.out}: {exc.strerror or exc}",
                      file=sys.stderr)
                return 1
        else:
            sys.stdout.buffer.write(data)
        return 0

    return _run(args, go)


def _cancel(args: argparse.Namespace) -> int:
    def go(client: Any) -> None:
        job = client.cancel(args.job_id)
        pending = job["status"] != "cancelled"
        print(f"{job['id']}: {job['status']}" + (" (stop requested)" if pending else ""))

    return _run(args, go)


def _resume(args: argparse.Namespace) -> int:
    def go(client: Any) -> None:
        job = client.resume(args.job_id)
        print(f"{job['id']}: {job['status']} (attempt {job['attempt']})")

    return _run(args, go)


def _logs(args: argparse.Namespace) -> int:
    from service.cli_format import FINAL_STATUSES

    def go(client: Any) -> int:
        printed, waited = 0, False
        while True:
            if args.follow:  # an API restart while following: retried, as for --wait
                status = _retrying(lambda: client.job(args.job_id), args.job_id)["status"]
                if status == "queued" and args.attempt is None:  # no log until it starts
                    if not waited:
                        print(f"job {args.job_id} is queued: waiting for it to start",
                              file=sys.stderr)  # fmt: skip
                    waited = True
                    time.sleep(args.interval)
                    continue
                final = status in FINAL_STATUSES
                text = _retrying(lambda: client.logs(args.job_id, args.attempt), args.job_id)
            else:
                final, text = True, client.logs(args.job_id, args.attempt)
            # Ray returns the whole log each time; print only what is new.
            sys.stdout.write(text[printed:] if len(text) >= printed else text)
            sys.stdout.flush()
            printed = len(text)
            if final:
                return 0
            time.sleep(args.interval)

    return _run(args, lambda client: _following(args.job_id, lambda: go(client)))


def _models(args: argparse.Namespace) -> int:
    from service.cli_format import preset_names, preset_rows, table

    def go(client: Any) -> int:
        catalog = client.models()
        models = catalog.get("models", [])
        if isinstance(models, dict):  # {name: {kind, ...}} form of an exported catalog
            models = [{"name": k, **(v if isinstance(v, dict) else {})} for k, v in models.items()]
        if args.name is not None:
            known = models
            models = [m for m in known if m.get("name") == args.name]
            if not models:  # (the normalized list: the dict form iterates as bare names)
                names = ", ".join(str(m.get("name")) for m in known)
                print(f"quantray models: no model {args.name!r}; models: {names}",
                      file=sys.stderr)  # fmt: skip
                return 1
        if args.json:
            print(json.dumps(models[0] if args.name else catalog, indent=2))
            return 0
        if args.name is not None:  # one model: a row per preset with its settings
            rows = preset_rows(models[0])
            columns = list(dict.fromkeys(k for row in rows for k in row))
            print(table(rows, columns) if rows else f"{args.name}: no presets listed")
            return 0
        rows = [{**m, "presets": ", ".join(preset_names(m)) or "-"} for m in models]
        columns = ["name", "kind"] + (["input"] if any("input" in m for m in models) else [])
        print(table(rows, [*columns, "presets"]))
        if catalog.get("presets"):  # the names-only catalog lists presets once for all
            print(f"presets: {', '.join(map(str, catalog['presets']))}")
        elif any(m.get("presets") for m in models):
            print("`quantray models NAME` shows a model's settings per preset", file=sys.stderr)
        return 0

    return _run(args, go)
