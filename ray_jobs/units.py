"""One unit of a job, start to finish, with no Ray in sight: fit one model on one prepared
symbol (one fold), score it, and put everything it produced in the job's storage.

Per unit, under `units/{symbol}/{model}/f{fold}/`:
- `model/`             the saved model (`metadata.json` + weights or coefficients)
- `predictions.parquet` val and test predictions (classes, probabilities, returns) next to
                       the truth, so ensembles and later analysis need no refit; test only
                       for a model refit on train+val, whose val is in-sample
- `metrics.json`       the leaderboard rows and the training history
and last, `status/{unit_id}.json` (`done` or `failed`): the marker a resubmitted job reads
to skip the unit. A unit that raises leaves error rows and a `failed` marker; the sweep
goes on.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np

from data.prepared import PreparedSymbol
from ray_jobs.planner import Unit
from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage

SPLITS = ("val", "test")
log = logging.getLogger(__name__)


def unit_overrides(
    spec: JobSpec, model: str, searched: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The spec's overrides for `model`, with the job's `max_epochs` cap applied to the
    preset's epochs too (the spec caps explicit overrides itself), the job's
    `features.seq_len` as the window of every sequence model and the job's seed as its
    training seed, unless overridden. `searched`: a Tune trial's params or a refit's
    overrides, laid over them."""
    arch, train = spec.model_overrides(model)
    if model in spec.deep_models:
        from models.registry import get_spec, resolve

        train.setdefault("seed", spec.seed)
        if spec.max_epochs is not None and "epochs" not in train:
            preset_epochs = resolve(model, spec.preset).train.epochs
            train["epochs"] = min(preset_epochs, spec.max_epochs)
        if get_spec(model).input == "sequence" and "seq_len" not in arch:
            arch["seq_len"] = spec.features.seq_len
    return {**arch, **{f"train.{k}": v for k, v in train.items()}, **(searched or {})}


def predict_splits(
    fitted: Any, prepared: PreparedSymbol, splits: Sequence[str] = SPLITS
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """split -> (probabilities [n, H, 3], classes [n, H] by the model's own rule,
    returns [n, H] | None): each model evaluated once per split, for both the leaderboard
    rows and the stored predictions."""
    from models.leaderboard import model_inputs

    out = {}
    for split in splits:
        x = model_inputs(fitted, prepared, split)
        proba = np.asarray(fitted.predict_proba(x), dtype=np.float32)
        ret = fitted.predict_return(x)
        out[split] = (proba, np.asarray(fitted.predict(x)),
                      None if ret is None else np.asarray(ret, dtype=np.float32))  # fmt: skip
    return out


def prediction_columns(
    prepared: PreparedSymbol, predicted: dict[str, tuple[np.ndarray, np.ndarray, Any]]
) -> dict[str, np.ndarray]:
    """Val and test predictions next to the truth, one row per sample, as columns (the
    layout of `predictions.parquet`)."""
    parts: dict[str, list[np.ndarray]] = {}

    def put(name: str, values: Any) -> None:
        parts.setdefault(name, []).append(np.asarray(values))

    for split, (proba, classes, ret) in predicted.items():
        idx = prepared.splits[split]
        put("split", np.full(idx.size, split, dtype=object))
        put("sample", idx)
        put("time", prepared.sample_times[idx])
        for j, h in enumerate(prepared.horizons):
            put(f"y_class_h{h}", prepared.y_class[idx, j])
            put(f"y_return_h{h}", prepared.y_return[idx, j])
            put(f"pred_class_h{h}", classes[:, j])
            for c, name in enumerate(("down", "flat", "up")):
                put(f"p_{name}_h{h}", proba[:, j, c])
            if ret is not None:
                put(f"pred_return_h{h}", ret[:, j])
    return {name: np.concatenate(values) for name, values in parts.items()}


def _parquet_bytes(cols: dict[str, np.ndarray]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf)
    return buf.getvalue()


def run_unit(
    unit: Unit,
    prepared: PreparedSymbol,
    spec: JobSpec,
    storage: JobStorage,
    *,
    callbacks: Sequence[Any] = (),
    resume_from: str | None = None,
    device: str | None = None,
    extra: dict[str, Any] | None = None,
    refit: dict[str, Any] | None = None,
    propagate: tuple[type[BaseException], ...] = (),
    predictions: dict[str, dict[str, np.ndarray]] | None = None,
) -> list[dict[str, Any]]:
    """Fit, score and store one unit; returns its leaderboard rows (errors become rows).

    `refit`: overrides from a Tune search; the model is then trained on train+val for a
    fixed number of epochs and scored on test only (val is in-sample for it).
    `propagate`: exception types that mean the unit's run broke, not the unit (Ray's own
    errors raised by a callback's `ray.train.report` once the Train controller is gone);
    they are re-raised, so the run's failure handling applies (restart from the latest
    checkpoint), instead of being recorded as the unit's failure.
    `predictions`: if given, the unit's stored predictions (`prediction_columns`) are also
    put there under its model name (for ensembles in the same process, with no read-back).
    """
    from models import api
    from models.leaderboard import fit_stats, prediction_rows

    started = time.time()
    try:
        overrides = unit_overrides(spec, unit.model, refit)
        splits = SPLITS
        if refit is not None:
            from ray_jobs.tune_search import train_plus_val

            prepared, splits = train_plus_val(prepared), ("test",)
        fitted = api.fit(
            unit.model, prepared, preset=spec.preset, overrides=overrides,
            task=spec.target.kind, callbacks=callbacks, resume_from=resume_from, device=device,
        )  # fmt: skip
        predicted = predict_splits(fitted, prepared)
        stats = fit_stats(fitted)
        rows = [
            row for split in splits
            for row in prediction_rows(prepared.symbol, unit.model, prepared, split,
                                       predicted[split][1], predicted[split][2], stats)
        ]  # fmt: skip
        artifact_uri = storage.uri_of(f"{unit.rel_dir}/model")
        for row in rows:
            row.update(unit_id=unit.unit_id, artifact_uri=artifact_uri)
        for name, data in fitted.artifact_files().items():
            storage.write_bytes(f"{unit.rel_dir}/model/{name}", data)
        # a refit's val is in-sample: only its out-of-sample splits are stored (ensembles)
        columns = prediction_columns(prepared, {k: predicted[k] for k in splits})
        storage.write_bytes(f"{unit.rel_dir}/predictions.parquet", _parquet_bytes(columns))
        history = list(getattr(fitted, "history", []) or [])
        storage.write_json(f"{unit.rel_dir}/metrics.json", {"rows": rows, "history": history})
        storage.write_unit_status(unit.unit_id, {
            "state": "done", "rows": rows, "started": started, "finished": time.time(),
            "history": history, **(extra or {}),
        })  # fmt: skip
        if predictions is not None:
            predictions[unit.model] = columns
        return rows
    except propagate:
        raise
    except Exception as exc:  # a failed unit is recorded; the sweep goes on
        return fail_unit(unit, prepared.horizons, exc, storage, started=started, extra=extra)


def fail_unit(
    unit: Unit,
    horizons: Sequence[int],
    exc: BaseException | str,
    storage: JobStorage | None,
    *,
    started: float | None = None,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Error rows for a unit and a `failed` status marker (best effort on storage)."""
    from models.metrics import error_rows

    message = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    rows = error_rows(unit.symbol, unit.model, list(horizons), message, fold=unit.fold)
    for row in rows:
        row.update(unit_id=unit.unit_id, artifact_uri=None)
    if storage is not None:
        detail = "" if isinstance(exc, str) else "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
        )
        try:
            storage.write_unit_status(unit.unit_id, {
                "state": "failed", "error": message, "traceback": detail, "rows": rows,
                "started": started, "finished": time.time(), **(extra or {}),
            })  # fmt: skip
        except Exception as store_exc:  # the rows still carry the error to the leaderboard
            log.warning("unit %s failed and its status could not be stored: %s",
                        unit.unit_id, store_exc)
    return rows
