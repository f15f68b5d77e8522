"""Units of work, and deep units grouped into TorchTrainer runs.

A unit is (symbol, model, fold[, trial]); its `unit_id` (`AAPL__lstm__f0`,
`BRK_B__lstm__f2__t007`) names its storage directory, its status marker and its logs, and
never holds a timestamp or a random part, so a resubmitted job finds its finished units.

Deep units are trained several at a time inside one `TorchTrainer` run, one after another,
each with its own checkpoints and results, because a run has a fixed cost (a Tune trial, the
Train controller, the worker and its helper actors, each a fresh process importing torch)
of about `DEFAULT_RUN_OVERHEAD_S` on a 2-core machine against a few seconds of training per
unit (`docs/ray-notes.md` has the numbers). A group holds one fold and consecutive units in
job order (symbol by symbol, every deep model of a symbol), so runs mix models and the
number of runs is set by the work, not by the number of models; with `auto`, a group holds
whole symbols, so every run has the same mix of models and takes about the same time.

Group size (`resources.units_per_run: auto`), with O the fixed cost of a run, u the
estimated training time of one unit, S the concurrent run slots, N the deep units:

    g_overhead = ceil((1 - eps) / eps * O / u)   smallest g whose overhead O / (O + g u)
                                                 is at most eps (0.10)
    g_balance  = floor(N / (WAVES * S))          largest g that still gives every slot
                                                 WAVES (4) runs: load balance, fine resume
    g = g_overhead              if g_overhead <= g_balance (both hold)
    g = argmin_g makespan(g)    otherwise, makespan(g) = ceil(ceil(N / g) / S) * (O + g u)

clamped to [1, MAX_UNITS_PER_RUN]. u includes the unit's per-epoch report cost (about
the controller's poll interval, 2 s by default, with synchronous checkpoint uploads; see
docs/ray-notes.md). A run's name is derived from its units (model, fold,
group index and a digest of the unit ids), so the same plan gives the same names; the
driver stores the plan (`Plan.to_dict`) and a resubmission reloads it, so a cluster of a
different size does not regroup a half-finished job.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from data.symbols import name_clashes, safe_symbol
from ray_jobs.spec import LINEAR_MODELS, MAX_UNITS_PER_RUN, JobSpec

DEFAULT_RUN_OVERHEAD_S = 25.0  # TorchTrainer fixed cost, two runs starting at once on 2 CPUs
OVERHEAD_BUDGET = 0.10  # eps: the fixed cost's share of a run we accept
WAVES = 4  # runs per slot we want at least, when the overhead budget allows it
# Rough seconds of one deep unit in a run slot per preset (training, per-epoch reports,
# scoring, artifacts); the executor may pass better ones. fast: 0.87 s measured in the
# 102 x 14 sweep on a quiet 2-CPU machine (~2.5 s under a load of 5-10).
DEFAULT_UNIT_SECONDS = {"fast": 1.0, "balanced": 15.0, "quality": 45.0}
# The fold a Tune search trains and validates on. Walk-forward: fold 0, whose train and val
# come before every fold's test block, so the one best config refitted on every fold has
# seen no fold's test data (the last fold's val lies inside earlier folds' test blocks:
# choosing on it would select on test).
SEARCH_FOLD = 0


@dataclass(frozen=True, order=True)
class Unit:
    symbol: str
    model: str
    fold: int = 0  # holdout: 0; walk-forward: 0 .. n_folds - 1
    trial: int | None = None  # None: the final training; k: tune trial k

    @property
    def unit_id(self) -> str:
        base = f"{safe_symbol(self.symbol)}__{self.model}__f{self.fold}"
        return base if self.trial is None else f"{base}__t{self.trial:03d}"

    @property
    def kind(self) -> str:
        return "linear" if self.model in LINEAR_MODELS else "deep"

    @property
    def rel_dir(self) -> str:
        """Directory under the job root: `units/{symbol}/{model}/f{fold}[/t{trial}]`."""
        base = f"units/{safe_symbol(self.symbol)}/{self.model}/f{self.fold}"
        return base if self.trial is None else f"{base}/t{self.trial:03d}"

    def to_dict(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "model": self.model, "fold": self.fold, "trial": self.trial}


@dataclass(frozen=True)
class RunGroup:
    """Deep units trained one after another inside one TorchTrainer run named `run_name`."""

    run_name: str
    units: tuple[Unit, ...]


@dataclass(frozen=True)
class Plan:
    symbols: tuple[str, ...]
    units: tuple[Unit, ...]  # every final unit (linear and deep), job order
    linear_units: tuple[Unit, ...]
    deep_groups: tuple[RunGroup, ...]
    tune_units: tuple[Unit, ...] = ()  # search trials; each is its own run (Tune trial)
    units_per_run: int = 1
    meta: dict[str, Any] = field(default_factory=dict)  # how units_per_run was chosen

    @property
    def deep_units(self) -> tuple[Unit, ...]:
        return tuple(u for g in self.deep_groups for u in g.units)

    @property
    def all_units(self) -> tuple[Unit, ...]:
        return self.tune_units + self.units

    def pending(self, done_unit_ids: Iterable[str]) -> Plan:
        """This plan without the finished units. Groups keep their run names (a resumed
        run finds its checkpoints); groups left empty are dropped."""
        done = set(done_unit_ids)

        def keep(units: Iterable[Unit]) -> tuple[Unit, ...]:
            return tuple(u for u in units if u.unit_id not in done)

        groups = tuple(RunGroup(g.run_name, keep(g.units)) for g in self.deep_groups)
        return Plan(
            self.symbols, keep(self.units), keep(self.linear_units),
            tuple(g for g in groups if g.units), keep(self.tune_units), self.units_per_run,
            dict(self.meta),
        )  # fmt: skip

    def summary(self) -> dict[str, int]:
        """Counts of the plan. `units` are the final units (what progress.json and
        summary.json count); the search's are not among them: `tune_trials` Tune trials
        (one per model and sample, each training every search symbol: 2 with 2 symbols
        said 4) and `tune_units` (symbol x model x sample)."""
        return {
            "symbols": len(self.symbols), "units": len(self.units),
            "linear_units": len(self.linear_units), "deep_units": len(self.deep_units),
            "deep_runs": len(self.deep_groups),
            "tune_trials": len({(u.model, u.trial) for u in self.tune_units}),
            "tune_units": len(self.tune_units), "units_per_run": self.units_per_run,
        }  # fmt: skip

    def describe(self) -> str:
        """One line for the driver's log, e.g. "8 units (4 linear, 4 deep in 2 runs of up
        to 2) + 2 search trials, 2 symbols"."""
        s = self.summary()
        trials = f" + {s['tune_trials']} search trials" if s["tune_trials"] else ""
        return (f"{s['units']} units ({s['linear_units']} linear, {s['deep_units']} deep in "
                f"{s['deep_runs']} runs of up to {s['units_per_run']}){trials}, "
                f"{s['symbols']} symbol{'s' * (s['symbols'] != 1)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbols": list(self.symbols),
            "units": [u.to_dict() for u in self.units],
            "deep_groups": [
                {"run_name": g.run_name, "units": [u.unit_id for u in g.units]}
                for g in self.deep_groups
            ],
            "tune_units": [u.to_dict() for u in self.tune_units],
            "units_per_run": self.units_per_run,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        units = tuple(Unit(**u) for u in d["units"])
        by_id = {u.unit_id: u for u in units}
        groups = tuple(
            RunGroup(g["run_name"], tuple(by_id[i] for i in g["units"])) for g in d["deep_groups"]
        )
        return cls(
            tuple(d["symbols"]), units, tuple(u for u in units if u.kind == "linear"), groups,
            tuple(Unit(**u) for u in d["tune_units"]), int(d["units_per_run"]), d.get("meta", {}),
        )  # fmt: skip


def auto_units_per_run(
    bucket_sizes: Sequence[int], slots: int, overhead_s: float, unit_s: float
) -> tuple[int, dict[str, Any]]:
    """Group size by the rule in the module docstring; returns (g, the numbers behind it).

    `bucket_sizes`: deep units per fold; a group never spans two buckets, so the number
    of runs for size g is sum(ceil(n_b / g)).
    """
    if slots < 1 or overhead_s < 0 or unit_s <= 0:
        raise ValueError(
            f"auto_units_per_run(slots={slots}, overhead_s={overhead_s}, unit_s={unit_s}): "
            "need slots >= 1, overhead_s >= 0 and unit_s > 0"
        )
    sizes = [n for n in bucket_sizes if n > 0]
    if not sizes:
        return 1, {"rule": "no deep units"}

    def runs(g: int) -> int:
        return sum(math.ceil(n / g) for n in sizes)

    def makespan(g: int) -> float:  # waves of runs over the slots, each wave a full run
        return math.ceil(runs(g) / slots) * (overhead_s + g * unit_s)

    g_over = max(1, math.ceil((1 - OVERHEAD_BUDGET) / OVERHEAD_BUDGET * overhead_s / unit_s))
    g_over = min(g_over, max(sizes), MAX_UNITS_PER_RUN)
    if runs(g_over) >= WAVES * slots:
        g, rule = g_over, "overhead budget met with >= WAVES runs per slot"
    else:  # too few units for both: the best estimated wall-clock, never above g_over
        g = min(range(1, g_over + 1), key=lambda k: (makespan(k), k))
        rule = "minimum estimated makespan (overhead budget and balance conflict)"
    info = {"rule": rule, "g_overhead": g_over, "runs": runs(g), "slots": slots,
            "overhead_s": overhead_s, "unit_s": unit_s, "deep_units": sum(sizes),
            "est_makespan_s": makespan(g)}  # fmt: skip
    return g, info


def estimate_deep_s(
    groups: Sequence[RunGroup], slots: int, preset: str, overhead_s: float = DEFAULT_RUN_OVERHEAD_S
) -> float:
    """Rough seconds the deep runs `groups` take on `slots` run slots: every run's fixed cost
    plus its units at the preset's default time, spread evenly over the slots. The progress
    ETA's prior for the deep units until the first of them ends (then their measured rate)."""
    unit_s = DEFAULT_UNIT_SECONDS.get(preset, DEFAULT_UNIT_SECONDS["balanced"])
    work = sum(overhead_s + len(g.units) * unit_s for g in groups)
    return work / max(1, slots)


def whole_symbols(g: int, per_symbol: int) -> int:
    """Group size `g` rounded to whole symbols (`per_symbol` deep units each), within
    [1, MAX_UNITS_PER_RUN]: to the nearest multiple, down if that passes the cap."""
    if per_symbol <= 1 or g < per_symbol:
        return g
    k = max(1, round(g / per_symbol))
    while k > 1 and k * per_symbol > MAX_UNITS_PER_RUN:
        k -= 1
    return min(k * per_symbol, MAX_UNITS_PER_RUN)


def plan(
    spec: JobSpec,
    symbols: Sequence[str],
    *,
    slots: int = 1,
    overhead_s: float = DEFAULT_RUN_OVERHEAD_S,
    unit_s: float | None = None,
) -> Plan:
    """All units of `spec` over the resolved `symbols` (job order), deep ones grouped.

    `slots`: deep runs that can run at once (GPU share or CPUs); only `units_per_run: auto`
    uses it, with `overhead_s` and `unit_s` (default: `DEFAULT_UNIT_SECONDS[spec.preset]`).
    """
    symbols = tuple(symbols)
    if not symbols:
        raise ValueError("plan: no symbols to train on; check dataset.symbols and the data")
    _check_unique_ids(symbols)
    folds = range(spec.split.folds)
    units = tuple(Unit(s, m, f) for s in symbols for m in spec.models for f in folds)
    linear = tuple(u for u in units if u.kind == "linear")
    deep = [u for u in units if u.kind == "deep"]

    buckets = {f: [u for u in deep if u.fold == f] for f in folds}  # job order
    if spec.resources.units_per_run == "auto":
        unit_s = unit_s if unit_s is not None else DEFAULT_UNIT_SECONDS[spec.preset]
        g, meta = auto_units_per_run([len(b) for b in buckets.values()], slots, overhead_s, unit_s)
        g = whole_symbols(g, len(spec.deep_models))
        meta.update(units_per_run=g, runs=sum(math.ceil(len(b) / g) for b in buckets.values()))
    else:
        g, meta = int(spec.resources.units_per_run), {"rule": "resources.units_per_run"}

    groups: list[RunGroup] = []
    for f, members in buckets.items():
        for gi in range(0, len(members), g):
            chunk = tuple(members[gi : gi + g])
            models = {u.model for u in chunk}
            label = next(iter(models)) if len(models) == 1 else "mix"
            digest = hashlib.sha1(",".join(u.unit_id for u in chunk).encode()).hexdigest()
            groups.append(RunGroup(f"run__{label}__f{f}__g{gi // g:03d}-{digest[:6]}", chunk))

    tune_units: tuple[Unit, ...] = ()
    if spec.tune.num_samples:
        t = spec.tune.symbols
        tsyms = symbols if t is None else (symbols[:t] if isinstance(t, int) else t)
        tune_units = tuple(
            Unit(s, m, SEARCH_FOLD, k)
            for s in tsyms for m in spec.deep_models for k in range(spec.tune.num_samples)
        )  # fmt: skip
    return Plan(symbols, units, linear, tuple(groups), tune_units, g, meta)


def _check_unique_ids(symbols: tuple[str, ...]) -> None:
    clashes = name_clashes(symbols)
    seen: set[str] = set()
    for s in symbols:
        if s in seen or s in clashes:
            what = ("is listed twice" if s in seen
                    else f"and {clashes[s]!r} both map to {safe_symbol(s)!r}")  # fmt: skip
            raise ValueError(f"plan: symbol {s!r} {what}; unit ids must be unique: drop one")
        seen.add(s)
