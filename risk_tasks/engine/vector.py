"""The monitor's formulas over a whole shard at once (NumPy, float64).

The same formulas as ``metrics.compute_metrics``, for every account of a shard in a
handful of array operations: positions are rows (account slot, symbol index, quantity,
entry); per-account sums are ``np.bincount`` over the slot column. Results match the
exact ``Decimal`` formulas to about 1e-12 relative (tests/unit/test_vector.py checks
1e-9).

Equity is a remainder (balance plus PnL that may nearly cancel it), so its float error
is bounded by the gross size of its terms, not by its own size: ``equity_error`` is
``EQUITY_ERROR`` times ``|balance| + sum |q| (mark + entry)``. A decision that would come
out differently anywhere within that band, or whose value sits within ``AMBIGUITY``
(relative) of its threshold, is flagged ambiguous so the caller decides it again exactly.

Pure: arrays in, arrays out; no Redis, no Celery.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Sequence

import numpy as np

from risk_tasks.engine.model import Policy, PolicyType
from risk_tasks.engine.policies import CONCENTRATION_PREFIX

AMBIGUITY = 1e-9  # relative distance to a threshold below which float64 is not trusted
# A float64 sum of k terms is off by at most about k * 1.1e-16 of their gross size; this
# covers sums of a few hundred terms (accounts hold at most a few dozen positions).
EQUITY_ERROR = 5e-14

_COMPARE = {
    "less_than": np.less,
    "less_than_or_equal": np.less_equal,
    "greater_than": np.greater,
    "greater_than_or_equal": np.greater_equal,
    "equal": np.equal,
}


@dataclass
class Book:
    """One shard's accounts (by slot) and positions (rows)."""

    balance: np.ndarray  # float64[n]
    pos_slot: np.ndarray  # int64[p]
    pos_sym: np.ndarray  # int64[p]
    pos_qty: np.ndarray  # float64[p], signed
    pos_entry: np.ndarray  # float64[p]

    @property
    def n(self) -> int:
        return len(self.balance)


@dataclass
class Sweep:
    """Per-account results of one evaluation (arrays of length n)."""

    equity: np.ndarray
    upnl: np.ndarray
    notional: np.ndarray
    margin_used: np.ndarray
    maintenance: np.ndarray
    open_positions: np.ndarray  # int
    unpriced: np.ndarray  # bool: a held symbol has no usable price
    peak: np.ndarray  # peak equity after raising it to equity
    daily: np.ndarray  # day-start equity
    drawdown_daily: np.ndarray
    drawdown_max: np.ndarray
    margin_ratio: np.ndarray  # +inf without margin used
    leverage: np.ndarray  # +inf with exposure and equity <= 0
    liquidatable: np.ndarray  # bool
    liquidation_ambiguous: np.ndarray  # bool: too close to call in float64
    notional_by_pos: np.ndarray  # float64[p]
    equity_error: np.ndarray  # bound of equity's float error


def evaluate(book: Book, marks: np.ndarray, imr: np.ndarray, mmr: np.ndarray,
             peak: np.ndarray, daily: np.ndarray) -> Sweep:
    """Metrics of every account of a shard.

    ``marks``, ``imr``, ``mmr``: per symbol index; a NaN mark means no usable price, and
    every account holding that symbol comes back ``unpriced`` (its other figures are
    not to be acted on, and its peak is not raised). ``peak``/``daily``: the current
    peak and day-start equity per slot; the returned peak is raised to equity where
    equity is higher, and a NaN day-start is reset to equity (the 00:00 UTC reset).
    """
    n = book.n
    q = book.pos_qty
    m = marks[book.pos_sym]
    slot = book.pos_slot
    missing = np.isnan(m)
    m_safe = np.where(missing, book.pos_entry, m)
    notional_p = np.abs(q) * m_safe
    upnl = np.bincount(slot, q * (m_safe - book.pos_entry), minlength=n)
    notional = np.bincount(slot, notional_p, minlength=n)
    margin_used = np.bincount(slot, notional_p * imr[book.pos_sym], minlength=n)
    maintenance = np.bincount(slot, notional_p * mmr[book.pos_sym], minlength=n)
    open_positions = np.bincount(slot, minlength=n)
    unpriced = np.bincount(slot, missing, minlength=n) > 0
    gross = np.abs(book.balance) + np.bincount(
        slot, np.abs(q) * (np.abs(m_safe) + np.abs(book.pos_entry)), minlength=n)
    equity_error = EQUITY_ERROR * gross
    equity = book.balance + upnl
    new_peak = np.where(unpriced, peak, np.fmax(peak, equity))
    daily = np.where(np.isnan(daily), equity, daily)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd_daily = np.where(daily > 0, (daily - equity) / daily, 0.0)
        dd_max = np.where(new_peak > 0, (new_peak - equity) / new_peak, 0.0)
        margin_ratio = np.where(margin_used > 0, equity / margin_used, np.inf)
        leverage = np.where(equity > 0, notional / equity,
                            np.where(notional > 0, np.inf, 0.0))
    has = open_positions > 0
    band = equity_error + EQUITY_ERROR * maintenance + AMBIGUITY * np.maximum(
        np.maximum(np.abs(equity), maintenance), 1.0) * 1e-3
    return Sweep(
        equity=equity, upnl=upnl, notional=notional, margin_used=margin_used,
        maintenance=maintenance, open_positions=open_positions, unpriced=unpriced,
        peak=new_peak, daily=daily, drawdown_daily=np.maximum(dd_daily, 0.0),
        drawdown_max=np.maximum(dd_max, 0.0), margin_ratio=margin_ratio, leverage=leverage,
        liquidatable=has & (equity < maintenance),
        liquidation_ambiguous=has & (np.abs(equity - maintenance) <= band),
        notional_by_pos=notional_p, equity_error=equity_error,
    )


def symbol_notional(book: Book, sweep: Sweep, symbol_index: int) -> np.ndarray:
    """Notional each account holds in one symbol (0 where it holds none)."""
    mask = book.pos_sym == symbol_index
    return np.bincount(book.pos_slot[mask], sweep.notional_by_pos[mask], minlength=book.n)


def holds(book: Book, symbol_index: int) -> np.ndarray:
    mask = book.pos_sym == symbol_index
    return np.bincount(book.pos_slot[mask], minlength=book.n) > 0


def metric_values(book: Book, sweep: Sweep, metric: str, symbol_index: dict[str, int],
                  equity: np.ndarray | None = None,
                  held_cache: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """The compared value of a policy metric per account, with the undefined values read
    as in ``policies.comparable_value`` (margin_ratio +inf without margin; leverage and
    concentrations +inf with exposure and equity <= 0). ``equity`` replaces the sweep's
    (to see how a decision moves within equity's error band)."""
    if equity is None:
        if metric == "leverage":
            return sweep.leverage
        if metric == "margin_ratio":
            return sweep.margin_ratio
        if metric == "drawdown_daily":
            return sweep.drawdown_daily
        if metric == "drawdown_max":
            return sweep.drawdown_max
        equity = sweep.equity
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "leverage":
            return _per_equity(sweep.notional, equity)
        if metric == "margin_ratio":
            return np.where(sweep.margin_used > 0, equity / sweep.margin_used, np.inf)
        if metric == "drawdown_daily":
            return np.maximum(np.where(sweep.daily > 0, (sweep.daily - equity) / sweep.daily,
                                       0.0), 0.0)
        if metric == "drawdown_max":
            peak = np.fmax(sweep.peak, equity)
            return np.maximum(np.where(peak > 0, (peak - equity) / peak, 0.0), 0.0)
    symbol = metric[len(CONCENTRATION_PREFIX):]
    index = symbol_index.get(symbol)
    if index is None:
        return np.zeros(book.n)
    held = None if held_cache is None else held_cache.get(index)
    if held is None:
        held = symbol_notional(book, sweep, index)
        if held_cache is not None:
            held_cache[index] = held
    return _per_equity(held, equity)


def _per_equity(amount: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """``amount / equity``; +inf with an amount and equity <= 0, 0 without an amount."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(equity > 0, amount / equity, np.where(amount > 0, np.inf, 0.0))


@dataclass
class PolicyHits:
    policy: Policy
    violated: np.ndarray  # bool[n]
    ambiguous: np.ndarray  # bool[n]: too close to the threshold to trust float64
    values: np.ndarray  # float64[n]


def policy_hits(book: Book, sweep: Sweep, policies: Sequence[Policy], applies: np.ndarray | None,
                symbol_index: dict[str, int], slot_of: dict[str, int] | None = None,
                max_leverage: np.ndarray | None = None) -> list[PolicyHits]:
    """Which accounts violate each policy (account and symbol scopes; strategy-scoped
    policies only apply to orders and are skipped here).

    ``applies``: accounts to consider at all (for example priced accounts with positions).
    ``max_leverage``: per-account cap (NaN: none), evaluated as a hard leverage policy
    named "Account Max Leverage".
    """
    hits = []
    base = np.ones(book.n, dtype=bool) if applies is None else applies
    low = sweep.equity - sweep.equity_error
    high = sweep.equity + sweep.equity_error
    held_cache: dict[int, np.ndarray] = {}
    for policy in policies:
        if not policy.enabled or policy.scope == "strategy":
            continue
        scope = base
        if policy.scope == "account" and policy.scope_id and policy.scope_id != "*":
            slot = (slot_of or {}).get(policy.scope_id)
            scope = np.zeros(book.n, dtype=bool)
            if slot is not None:
                scope[slot] = base[slot]
        elif policy.scope == "symbol":
            index = symbol_index.get(policy.scope_id or "")
            if index is None:
                continue
            scope = base & holds(book, index)
        values = metric_values(book, sweep, policy.metric, symbol_index, held_cache=held_cache)
        threshold = float(policy.threshold)
        compare = _COMPARE[policy.operator]
        ok = compare(values, threshold)
        unsure = np.abs(values - threshold) <= AMBIGUITY * np.maximum(np.abs(threshold), 1.0)
        for bound in (low, high):
            moved = metric_values(book, sweep, policy.metric, symbol_index, bound, held_cache)
            unsure |= compare(moved, threshold) != ok
        hits.append(PolicyHits(policy, scope & ~ok, scope & unsure, values))
    if max_leverage is not None:
        capped = base & ~np.isnan(max_leverage)
        if capped.any():
            cap = np.where(np.isnan(max_leverage), np.inf, max_leverage)
            policy = Policy("Account Max Leverage", PolicyType.HARD, "leverage",
                            "less_than_or_equal", Decimal(0))
            over = sweep.leverage > cap
            with np.errstate(invalid="ignore"):  # inf - inf where uncapped: never unsure
                unsure = np.abs(sweep.leverage - cap) <= AMBIGUITY * np.maximum(cap, 1.0)
            for bound in (low, high):
                unsure |= (_per_equity(sweep.notional, bound) > cap) != over
            hits.append(PolicyHits(policy, capped & over, capped & unsure, sweep.leverage))
    return hits


def shock_marks(marks: np.ndarray, shocks: dict[int, float]) -> np.ndarray:
    """Marks moved by relative shocks ``{symbol index: move}`` (-0.1 is a 10 % fall)."""
    shocked = marks.copy()
    for index, move in shocks.items():
        shocked[index] = marks[index] * (1.0 + move)
    return shocked
