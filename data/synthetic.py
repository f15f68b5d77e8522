"""Seeded synthetic markets with a KNOWN signal, for tests and for checking that models learn.

`planted_bars`: daily bars whose next return has a drift that is a nonlinear function of
two bar features, the last 1-bar log return r_t and the 20-bar volume z-score z_t (exactly
the `logret_1` and `volume_z_20` columns of `data.features`):

    m_t     = A * sigma * tanh(c * (r_t / sigma) * z_t)   momentum on high volume (z > 0),
    r_{t+1} = m_t + sigma * eps_{t+1}                     reversal on low volume (z < 0)

with eps iid N(0, 1) and log volume an AR(1) around a symbol level (so z persists a few
bars and a move started on high volume tends to continue: longer horizons carry signal).
`info` reports the Bayes accuracy per horizon under the pipeline's class definition (auto
thresholds = 1/3 quantile of |forward return| on the first 70% of rows, reported too):
horizon 1 exactly (Gaussian given m_t), longer horizons by conditional Monte Carlo (see
`planted_oracle_proba`). `random_walk_bars` is the same market with A = 0.
`planted_lob`: order-book snapshots whose next mid move follows the level-1 imbalance.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from data.features import VOLUME_Z_WINDOW, rolling_zscore
from data.prepared import PreparedSymbol
from data.targets import AUTO_QUANTILE, forward_log_returns

TRAIN_FRACTION = 0.7  # rows the reported thresholds are fitted on, as in the default split
DEFAULT_HORIZONS = (1, 5, 10, 20)


def _dates(n_days: int) -> pd.DatetimeIndex:
    return pd.bdate_range("2012-01-02", periods=n_days)


def _drift(r: np.ndarray, z: np.ndarray, sigma: np.ndarray, strength: float, gain: float
           ) -> np.ndarray:
    """m = A sigma tanh(c (r / sigma) z); 0 where r or z is undefined (warm-up)."""
    m = strength * sigma * np.tanh(gain * (r / sigma) * z)
    return np.where(np.isfinite(m), m, 0.0)


def _planted_params(n_symbols: int, rng: np.random.Generator, strength: float, gain: float,
                    volume_rho: float) -> dict[str, Any]:
    return {
        "symbols": [f"SYN{k:02d}" for k in range(n_symbols)],  # per-symbol lists follow this
        "strength": float(strength),
        "gain": float(gain),
        "volume_rho": float(volume_rho),
        "volume_log_sd": 0.5,
        "sigma": rng.uniform(0.01, 0.02, n_symbols).tolist(),
        "volume_log_level": np.log(rng.uniform(2e5, 5e6, n_symbols)).tolist(),
        "start_price": rng.uniform(20.0, 200.0, n_symbols).tolist(),
    }


def _volumes(n_days: int, p: dict[str, Any], k: int, rng: np.random.Generator) -> np.ndarray:
    """(T,) positive integer volumes of symbol k: log volume AR(1) with unit-variance state."""
    rho, scale = p["volume_rho"], math.sqrt(1 - p["volume_rho"] ** 2)
    shocks = rng.standard_normal(n_days).tolist()
    u = [shocks[0]] * n_days
    # AR(1) state; a loop over days is fine in a generator (features never loop)
    for t in range(1, n_days):
        u[t] = rho * u[t - 1] + scale * shocks[t]
    log_v = p["volume_log_level"][k] + p["volume_log_sd"] * np.asarray(u)
    return np.maximum(1, np.rint(np.exp(log_v))).astype(np.int64)


def _simulate_bars(n_symbols: int, n_days: int, seed: int, strength: float, gain: float,
                   volume_rho: float) -> tuple[pd.DataFrame, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    p = _planted_params(n_symbols, rng, strength, gain, volume_rho)
    dates, frames = _dates(n_days), []
    for k in range(n_symbols):
        sigma = p["sigma"][k]
        volume = _volumes(n_days, p, k, rng)
        z = rolling_zscore(np.log1p(volume.astype(np.float64)), VOLUME_Z_WINDOW)  # (T,)
        eps = (sigma * rng.standard_normal(n_days)).tolist()
        zs = np.nan_to_num(z, nan=0.0).tolist()  # no drift before the z window is full
        r = [0.0] * n_days  # r[t] = log(close_t / close_{t-1}); r[0] = 0
        # r_{t+1} depends on r_t: sequential by nature (plain floats keep the loop fast)
        for t in range(n_days - 1):
            drift = strength * sigma * math.tanh(gain * (r[t] / sigma) * zs[t])
            r[t + 1] = drift + eps[t + 1]
        close = p["start_price"][k] * np.exp(np.cumsum(np.asarray(r)))
        frames.append(_ohlc(p["symbols"][k], dates, close, volume, sigma, rng))
    return pd.concat(frames, ignore_index=True), p


def _ohlc(symbol: str, dates: pd.DatetimeIndex, close: np.ndarray, volume: np.ndarray,
          sigma: float, rng: np.random.Generator) -> pd.DataFrame:
    """Bars around a close path: open gaps from the previous close, high/low bracket both."""
    n = len(close)
    prev = np.concatenate([[close[0]], close[:-1]])
    open_ = prev * np.exp(0.2 * sigma * rng.standard_normal(n))
    high = np.maximum(open_, close) * np.exp(np.abs(0.5 * sigma * rng.standard_normal(n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(0.5 * sigma * rng.standard_normal(n)))
    return pd.DataFrame({
        "symbol": symbol, "date": dates, "open": open_, "high": high, "low": low,
        "close": close, "volume": volume,
    })


# ---- the oracle: class probabilities from the true conditional distribution ---------------
def _normal_cdf(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr  # lazy: only the oracle needs it

    return ndtr(x)


def _class_probs(mean: np.ndarray, sigma: float, tau: float) -> np.ndarray:
    """(..., 3) P(down, flat, up) of mean + sigma * N(0, 1) with flat band [-tau, tau]."""
    down = _normal_cdf((-tau - mean) / sigma)
    up = 1.0 - _normal_cdf((tau - mean) / sigma)
    return np.stack([down, 1.0 - down - up, up], axis=-1)


def _oracle_symbol(close: np.ndarray, volume: np.ndarray, k: int, p: dict[str, Any],
                   thresholds: np.ndarray, horizons: tuple[int, ...], rows: np.ndarray,
                   n_paths: int, rng: np.random.Generator) -> np.ndarray:
    """(len(rows), H, 3) P(class of the h-bar forward return | bars up to row t).

    h = 1 is exact. For h > 1 the paths of the next h - 1 bars (returns and volumes) are
    simulated from the true model and the last bar is integrated analytically (it is
    Gaussian given the path): a Rao-Blackwellized conditional Monte Carlo.
    """
    sigma, a, c = p["sigma"][k], p["strength"], p["gain"]
    rho, level, sd = p["volume_rho"], p["volume_log_level"][k], p["volume_log_sd"]
    w = VOLUME_Z_WINDOW
    logc, lv = np.log(close), np.log1p(volume.astype(np.float64))
    r = np.diff(logc, prepend=np.nan)
    m = _drift(r, rolling_zscore(lv, w), sigma, a, c)  # (T,) drift of the next bar
    u = (np.log(np.maximum(volume, 1)) - level) / sd  # AR(1) volume state (up to rounding)
    if a == 0:  # no signal: the h-bar return is N(0, h sigma^2) whatever the past
        exact = [_class_probs(np.zeros(1), sigma * math.sqrt(h), float(tau))[0]
                 for h, tau in zip(horizons, thresholds, strict=True)]
        return np.broadcast_to(np.stack(exact), (len(rows), len(horizons), 3)).copy()
    x = lv - level  # centred log volume: keeps the running window sums well conditioned
    out = np.empty((len(rows), len(horizons), 3))
    steps = max(horizons) - 1
    for lo in range(0, len(rows), 64):  # chunks of rows bound the (P, M, w + steps) buffer
        t = rows[lo : lo + 64]
        n_p = len(t)
        buf = np.empty((n_p, n_paths, w + steps))  # the window values, actual then simulated
        buf[:, :, :w] = x[t[:, None] + np.arange(-w + 1, 1)][:, None, :]
        s1, s2 = buf[:, :, :w].sum(-1), (buf[:, :, :w] ** 2).sum(-1)  # (P, M) window sums
        m_cur = np.broadcast_to(m[t][:, None], (n_p, n_paths))
        u_cur = np.broadcast_to(u[t][:, None], (n_p, n_paths))
        total = np.zeros((n_p, n_paths))  # return of the simulated bars so far
        for j in range(steps + 1):
            for i, h in enumerate(horizons):
                if h == j + 1:  # the last bar of horizon h: Gaussian around total + m_cur
                    probs = _class_probs(total + m_cur, sigma, float(thresholds[i]))
                    out[lo : lo + n_p, i] = probs.mean(axis=1)
            if j == steps:
                break
            r_new = m_cur + sigma * rng.standard_normal((n_p, n_paths))
            total = total + r_new
            u_cur = rho * u_cur + np.sqrt(1 - rho**2) * rng.standard_normal((n_p, n_paths))
            x_new = np.log1p(np.maximum(1.0, np.rint(np.exp(level + sd * u_cur)))) - level
            buf[:, :, w + j] = x_new
            old = buf[:, :, j]  # leaves the window, which now ends at t + j + 1
            s1, s2 = s1 + x_new - old, s2 + x_new**2 - old**2
            mean = s1 / w
            std = np.sqrt(np.maximum(s2 / w - mean**2, 0.0))
            with np.errstate(invalid="ignore", divide="ignore"):
                z = np.where(std > 1e-9, (x_new - mean) / std, 0.0)
            m_cur = _drift(r_new, z, sigma, a, c)
    return out


def _symbol_index(p: dict[str, Any], symbol: str) -> int:
    if symbol not in p["symbols"]:
        raise ValueError(f"symbol {symbol!r} was not generated with these params "
                         f"(generated: {p['symbols']}); pass the generator's own info")
    return p["symbols"].index(symbol)


def _thresholds(close: np.ndarray, horizons: tuple[int, ...], first_row: int) -> np.ndarray:
    """(H,) auto thresholds: 1/3 quantile of |forward return| over the first 70% of rows."""
    stop = int(len(close) * TRAIN_FRACTION)
    fwd = forward_log_returns(close, horizons)[first_row:stop]  # NaN only near the end
    return np.nanquantile(np.abs(fwd), AUTO_QUANTILE, axis=0)


def planted_oracle_proba(df: pd.DataFrame, info: dict[str, Any], *, rows_stride: int = 1,
                         n_paths: int = 256, seed: int = 0) -> dict[str, tuple[np.ndarray,
                                                                                 np.ndarray]]:
    """symbol -> (rows (P,), probs (P, H, 3)): the Bayes class probabilities at every
    `rows_stride`-th row that has a defined signal and a label for the longest horizon,
    with the thresholds in `info["thresholds"]` (pass a fresh sample's own info)."""
    p, horizons = info["params"], tuple(info["horizons"])
    rng = np.random.default_rng(seed)
    out = {}
    for symbol, g in df.groupby("symbol", sort=True):
        k = _symbol_index(p, str(symbol))
        close = g["close"].to_numpy(np.float64)
        rows = np.arange(VOLUME_Z_WINDOW, len(close) - max(horizons), rows_stride)
        tau = np.asarray(info["thresholds"][symbol])
        probs = _oracle_symbol(close, g["volume"].to_numpy(), k, p, tau, horizons, rows,
                               n_paths, rng)
        out[str(symbol)] = (rows, probs)
    return out


def planted_split_accuracy(df: pd.DataFrame, info: dict[str, Any],
                           prepared: PreparedSymbol, split: str = "test", *,
                           n_paths: int = 256, seed: int = 0) -> dict[str, dict[int, float]]:
    """Accuracies on exactly the samples of one split of a PreparedSymbol made from `df`,
    under ITS thresholds (fitted on its train split), to compare a trained model against:

    bayes: expected accuracy of the Bayes rule (mean max probability); oracle: realized
    accuracy of the Bayes rule against `prepared.y_class`; baseline: realized accuracy of
    always predicting the training split's most frequent class.
    """
    p, horizons = info["params"], prepared.horizons
    g = df[df["symbol"] == prepared.symbol]
    idx = prepared.splits[split]
    rows = prepared.meta["warmup_rows"] + prepared.row0 + idx  # raw rows of the decisions
    probs = _oracle_symbol(g["close"].to_numpy(np.float64), g["volume"].to_numpy(),
                           _symbol_index(p, prepared.symbol), p, prepared.thresholds,
                           horizons, rows, n_paths, np.random.default_rng(seed))
    y, y_train = prepared.y_class[idx], prepared.y_class[prepared.splits["train"]]
    majority = [np.bincount(y_train[:, i], minlength=3).argmax() for i in range(len(horizons))]
    return {
        "bayes": {h: float(probs[:, i].max(-1).mean()) for i, h in enumerate(horizons)},
        "oracle": {h: float((probs[:, i].argmax(-1) == y[:, i]).mean())
                   for i, h in enumerate(horizons)},
        "baseline": {h: float((y[:, i] == majority[i]).mean()) for i, h in enumerate(horizons)},
    }


def _bars_info(df: pd.DataFrame, p: dict[str, Any], horizons: tuple[int, ...], kind: str,
               n_paths: int, bayes_stride: int) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": kind, "horizons": list(horizons), "params": p}
    info["thresholds"] = {
        str(s): _thresholds(g["close"].to_numpy(np.float64), horizons, VOLUME_Z_WINDOW).tolist()
        for s, g in df.groupby("symbol", sort=True)
    }
    oracle = planted_oracle_proba(df, info, rows_stride=bayes_stride, n_paths=n_paths)
    info.update(_accuracies([pr for _, pr in oracle.values()], horizons))
    info["bayes_method"] = {
        h: "exact (Gaussian)" if h == 1 or p["strength"] == 0 else
        f"conditional Monte Carlo, {n_paths} paths x every {bayes_stride}th row"
        for h in horizons
    }
    return info


def _accuracies(probs: list[np.ndarray], horizons: tuple[int, ...]) -> dict[str, Any]:
    """Bayes and baseline accuracy from per-symbol (P, H, 3) true class probabilities.

    The Bayes rule predicts the argmax, so its expected accuracy is the mean of the largest
    probability. The baseline predicts each symbol's most likely class (largest marginal
    probability of that symbol) at every row. Both average over all rows of all symbols.
    """
    n = sum(len(pr) for pr in probs)
    bayes = sum(pr.max(-1).sum(0) for pr in probs) / n  # (H,)
    base = sum(len(pr) * pr.mean(0).max(-1) for pr in probs) / n  # (H,)
    return {
        "bayes_accuracy": {h: float(bayes[i]) for i, h in enumerate(horizons)},
        "baseline_accuracy": {h: float(base[i]) for i, h in enumerate(horizons)},
    }


def planted_bars(n_symbols: int = 4, n_days: int = 1500, seed: int = 0, *,
                 horizons: tuple[int, ...] = DEFAULT_HORIZONS, strength: float = 1.5,
                 gain: float = 1.0, volume_rho: float = 0.8, n_paths: int = 256,
                 bayes_stride: int = 4) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Long bars frame (symbols SYN00.., business days from 2012-01-02) and its info:

    bayes_accuracy / baseline_accuracy: {h: float} averaged over all rows and symbols;
    thresholds: {symbol: [tau_h]} (auto rule on the first 70% of rows); params: the
    generator's parameters (what `planted_oracle_proba` needs); bayes_method: {h: str}.
    The Monte Carlo horizons (h > 1) use `n_paths` paths at every `bayes_stride`-th row;
    with the defaults their standard error is about 0.005.
    """
    df, p = _simulate_bars(n_symbols, n_days, seed, strength, gain, volume_rho)
    info = _bars_info(df, p, tuple(horizons), "planted_bars", n_paths, bayes_stride)
    return df, info | {"seed": seed, "n_symbols": n_symbols, "n_days": n_days}


def random_walk_bars(n_symbols: int = 4, n_days: int = 1500, seed: int = 0, *,
                     horizons: tuple[int, ...] = DEFAULT_HORIZONS
                     ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Bars without signal (A = 0): info["bayes_accuracy"] == info["baseline_accuracy"]."""
    df, p = _simulate_bars(n_symbols, n_days, seed, 0.0, 0.0, 0.8)
    info = _bars_info(df, p, tuple(horizons), "random_walk_bars", 0, 1)
    return df, info | {"seed": seed, "n_symbols": n_symbols, "n_days": n_days}


# ---- intraday bars ------------------------------------------------------------------------
def session_times(start: str, end: str, freq: str = "1min", *,
                  session: tuple[str, str] = ("09:30", "16:00"), tz: str | None = None,
                  skip: tuple[str, ...] = ()) -> pd.DatetimeIndex:
    """Bar times `freq` apart in [session open, close) of each weekday from `start` to `end`
    (local clock), leaving out the days in `skip` (holidays, or holes for a test); with
    `tz` the local times are in that zone and returned as naive UTC (as validation reads
    zone-aware times)."""
    days = pd.bdate_range(start, end)
    days = days[~days.isin(pd.DatetimeIndex(list(skip)))]
    opens, closes = pd.Timedelta(f"{session[0]}:00"), pd.Timedelta(f"{session[1]}:00")
    offsets = pd.timedelta_range(opens, closes, freq=freq)
    offsets = offsets[offsets < closes]
    times = pd.DatetimeIndex((days.to_numpy()[:, None] + offsets.to_numpy()[None, :]).ravel())
    if tz is not None:
        times = times.tz_localize(tz).tz_convert("UTC").tz_localize(None)
    return times


def intraday_bars(times: pd.DatetimeIndex, symbols: tuple[str, ...] = ("AAA",), *,
                  price: float = 50.0, sigma: float = 0.001, tick: float | None = None,
                  seed: int = 0) -> pd.DataFrame:
    """Long bars at `times` (e.g. `session_times`) for each symbol: a random walk of log
    price with `sigma` per bar from `price`; with `tick`, prices lie on that grid (a cent
    on a $3 stock: most 1-minute returns are exactly 0)."""
    rng = np.random.default_rng(seed)
    frames = []
    for symbol in symbols:
        n = len(times)
        close = price * np.exp(np.cumsum(sigma * rng.standard_normal(n)))
        if tick is not None:
            close = np.maximum(np.round(close / tick), 1) * tick
        open_ = np.concatenate([[close[0]], close[:-1]])
        frames.append(pd.DataFrame({
            "symbol": symbol, "date": times, "open": open_,
            "high": np.maximum(open_, close), "low": np.minimum(open_, close),
            "close": close, "volume": rng.integers(1, 100, n) * 100,
        }))
    return pd.concat(frames, ignore_index=True)


# ---- limit order book ---------------------------------------------------------------------
def _lob_symbol(symbol: str, n: int, levels: int, p: dict[str, Any], k: int,
                rng: np.random.Generator) -> pd.DataFrame:
    """Snapshots whose next mid log return is A sigma tanh(c * imbalance_1) + sigma eps."""
    sigma = p["sigma"][k]

    def sizes() -> np.ndarray:  # (T, L) positive integers, deeper levels hold more
        depth = np.log(100.0 * (1 + 0.5 * np.arange(levels)))
        return np.maximum(1, np.rint(np.exp(depth + 0.6 * rng.standard_normal((n, levels)))))

    ask_s, bid_s = sizes(), sizes()
    imb = (bid_s[:, 0] - ask_s[:, 0]) / (bid_s[:, 0] + ask_s[:, 0])  # (T,)
    r = np.zeros(n)  # r[t + 1] depends on the imbalance at t only: no recursion needed
    r[1:] = (p["strength"] * sigma * np.tanh(p["gain"] * imb[:-1])
             + sigma * rng.standard_normal(n - 1))
    mid = p["start_price"][k] * np.exp(np.cumsum(r))
    half = p["half_spread_bps"][k] * np.exp(0.2 * rng.standard_normal(n))  # (T,) bps
    offset = (half[:, None] + np.arange(levels)[None, :] * p["tick_bps"]) / 1e4  # (T, L)
    cols: dict[str, Any] = {
        "symbol": symbol,
        "ts": pd.date_range("2021-01-04 09:30:00", periods=n, freq="s"),
    }
    for name, values in (("ask_price", mid[:, None] * (1 + offset)), ("ask_size", ask_s),
                         ("bid_price", mid[:, None] * (1 - offset)), ("bid_size", bid_s)):
        for i in range(levels):
            cols[f"{name}_{i + 1}"] = values[:, i].astype(
                np.int64 if name.endswith("size") else np.float64
            )
    return pd.DataFrame(cols)


def planted_lob_oracle_proba(df: pd.DataFrame, info: dict[str, Any]
                             ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """symbol -> (rows (P,), probs (P, 1, 3)): exact Bayes class probabilities of the next
    mid-price move at every row but the last, with `info["thresholds"]`."""
    p, out = info["params"], {}
    for symbol, g in df.groupby("symbol", sort=True):
        k = _symbol_index(p, str(symbol))
        b1, a1 = g["bid_size_1"].to_numpy(np.float64), g["ask_size_1"].to_numpy(np.float64)
        m = p["strength"] * p["sigma"][k] * np.tanh(p["gain"] * (b1 - a1) / (b1 + a1))
        rows = np.arange(len(g) - 1)
        tau = float(info["thresholds"][str(symbol)][0])
        out[str(symbol)] = (rows, _class_probs(m[rows], p["sigma"][k], tau)[:, None, :])
    return out


def planted_lob(n_symbols: int = 2, n_snapshots: int = 5000, levels: int = 5, seed: int = 0,
                *, strength: float = 1.0, gain: float = 3.0
                ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """LOB snapshots (symbols LOB00..) where level-1 imbalance predicts the next mid move;
    info reports the exact Bayes and baseline accuracy for horizon 1."""
    if levels < 1:
        raise ValueError(f"levels={levels}: use at least 1 book level")
    rng = np.random.default_rng(seed)
    p = {
        "symbols": [f"LOB{k:02d}" for k in range(n_symbols)],
        "strength": float(strength), "gain": float(gain), "tick_bps": 1.0,
        "sigma": rng.uniform(1e-4, 3e-4, n_symbols).tolist(),
        "start_price": rng.uniform(20.0, 200.0, n_symbols).tolist(),
        "half_spread_bps": rng.uniform(0.5, 2.0, n_symbols).tolist(),
    }
    df = pd.concat([_lob_symbol(p["symbols"][k], n_snapshots, levels, p, k, rng)
                    for k in range(n_symbols)], ignore_index=True)
    info: dict[str, Any] = {"kind": "planted_lob", "horizons": [1], "params": p, "seed": seed}
    info["thresholds"] = {}
    for symbol, g in df.groupby("symbol", sort=True):
        mid = (g["ask_price_1"].to_numpy() + g["bid_price_1"].to_numpy()) / 2
        info["thresholds"][str(symbol)] = _thresholds(mid, (1,), 0).tolist()
    info.update(_accuracies([pr for _, pr in planted_lob_oracle_proba(df, info).values()], (1,)))
    info["bayes_method"] = {1: "exact (Gaussian)"}
    return df, info


def random_walk_lob(n_symbols: int = 4, n_snapshots: int = 3000, levels: int = 5,
                    seed: int = 0, *, tick: float = 0.01) -> pd.DataFrame:
    """LOB snapshots (symbols RW00..) without signal: the mid is a random walk, the spread
    is noise, and the book's levels sit `tick` (in price units) apart, as real books' do,
    so a level's distance from the mid in basis points follows the price level."""
    if levels < 1:
        raise ValueError(f"levels={levels}: use at least 1 book level")
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_symbols):
        mid = rng.uniform(20.0, 200.0) * np.exp(np.cumsum(rng.normal(0, 1e-4, n_snapshots)))
        half = tick / 2 + np.abs(rng.normal(0, tick / 4, n_snapshots))  # (T,)
        offset = half[:, None] + tick * np.arange(levels)[None, :]  # (T, L) price units
        cols: dict[str, Any] = {
            "symbol": f"RW{k:02d}",
            "ts": pd.date_range("2021-01-04 09:30:00", periods=n_snapshots, freq="s"),
        }
        for name, values in (("ask_price", mid[:, None] + offset),
                             ("ask_size", rng.integers(1, 500, (n_snapshots, levels))),
                             ("bid_price", mid[:, None] - offset),
                             ("bid_size", rng.integers(1, 500, (n_snapshots, levels)))):
            for i in range(levels):
                cols[f"{name}_{i + 1}"] = values[:, i]
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)
