"""One shard of one tick: evaluate every account, then act on what breached.

Order of actions, per DESIGN.md: liquidations first (one episode per breach), then
emergency stops for accounts that are not being liquidated, then the circuit breaker
for hard violations, then alerts (de-duplicated across instances, and summarised when
one policy is breached by many accounts at once) and the violation records.

A decision that float64 cannot call (inputs within 1e-9 of a threshold) is taken again
exactly, in ``Decimal``, from the account's stored state.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np

from risk_tasks import alerting, control, episodes
from risk_tasks.actions import liquidation_key
from risk_tasks.app import send_many
from risk_tasks.engine.metrics import compute_metrics, is_liquidatable
from risk_tasks.engine.model import PolicyType, SymbolSpec, TradingState
from risk_tasks.engine.policies import evaluate as evaluate_policies
from risk_tasks.engine.vector import Book, evaluate, policy_hits, shock_marks
from risk_tasks.hooks import after_emergency_stop
from risk_tasks.logs import log_event
from risk_tasks.metrics import CIRCUIT_BREAKER_TRIPS, SHARD_DURATION, VIOLATIONS
from risk_tasks.monitor.cache import ACTIVE, HALTED, ShardCache, cache_for, symbol_index
from risk_tasks.state import keys
from risk_tasks.state.codec import day_id, decode_mark
from risk_tasks.state.store import StateError, _script

log = logging.getLogger(__name__)

LEVEL_OF = {PolicyType.SOFT: "warning", PolicyType.HARD: "critical",
            PolicyType.EMERGENCY: "emergency"}
CLAIM_HOLD_SECONDS = 30.0  # an alert's claim before its message is sent (see _alerts)
STORM_THRESHOLD = 20  # fresh alerts of one policy in one shard-tick above which one summary goes
PEAK_JOURNAL_EVERY = 60  # seconds between journal records of monitor-raised peaks
MAX_STRESS_ROWS = 1000


class ShardEvaluator:
    def __init__(self, rt) -> None:  # noqa: ANN001 - risk_tasks.runtime.Runtime
        self.rt = rt
        self.redis = rt.redis
        self.settings = rt.settings
        self._marks_script = rt.redis.register_script(_script("monitor_marks.lua"))
        self._breaker_script = rt.redis.register_script(_script("breaker.lua"))
        # (policy, account) whose violation alert is known claimed, until when
        self._claimed: dict[tuple[str, str], float] = {}
        self._journalled_peak: dict[int, np.ndarray] = {}
        self._peaks_at: dict[int, float] = {}

    # -- ENTRY POINT --

    def run(self, shard: int, tick_ts: float, shocks: dict[str, float] | None = None) -> dict:
        started = time.perf_counter()
        began_at = time.time()
        phases = Phases(started)
        cache = cache_for(self.settings.redis_url, shard, self.settings.shards)
        mode = cache.refresh(self.redis)
        phases.mark("refresh")
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.PRICES).get(keys.CONFIG_VERSION)
        pipe.get(keys.shard_marks_version(shard))
        raw_prices, cfg_version, marks_version = pipe.execute()
        config = self.rt.store.config(cfg_version or b"0")
        index = symbol_index()
        for symbol in config.specs:
            index(symbol)
        now = self.rt.clock.time()
        marks, imr, mmr, exact_marks = self._pricing(raw_prices, config.specs, now)
        cache.marks_arrays(self.redis, marks_version)
        phases.mark("read")
        today = day_id(tick_ts)
        reset_day = cache.day_id != today
        # No day id at all (a fresh or rebuilt state) is not a new day: the day-start
        # equity the accounts came with stands, and equity where they came without one.
        new_day = reset_day and bool(cache.day_id)
        peak_in = np.fmax(cache.peak_base, cache.hwm)
        daily_in = np.full(cache.n, np.nan) if new_day else \
            np.where(np.isnan(cache.day), cache.daily_base, cache.day)
        book = cache.book()
        if shocks is not None:
            shocked = shock_marks(marks, {index(s): m for s, m in shocks.items()})
            return self._stress(cache, book, shocked, imr, mmr, peak_in, daily_in, shard,
                                started)
        sweep = evaluate(book, marks, imr, mmr, peak_in, daily_in)
        priced = (sweep.open_positions > 0) & ~sweep.unpriced
        hits = policy_hits(book, sweep, config.policies, priced, index.index, cache.slot_of,
                           cache.max_leverage)
        self._settle_ambiguous(cache, sweep, hits, priced, config, exact_marks)
        phases.mark("evaluate")
        liquidatable = sweep.liquidatable & priced
        result = {"shard": shard, "tick_ts": tick_ts, "accounts": cache.n,
                  "priced": int(priced.sum()), "unpriced": int(sweep.unpriced.sum()),
                  "cache": mode, "failed": False}
        result.update(self._act(cache, sweep, hits, liquidatable, tick_ts, now, phases))
        self._store_marks(cache, sweep, reset_day, today, marks_version)
        self._journal_peaks(cache, sweep, now)
        phases.mark("store")
        duration = time.perf_counter() - started
        SHARD_DURATION.observe(duration)
        result["duration_ms"] = round(duration * 1000, 3)
        result["phases_ms"] = phases.ms
        result["span"] = [began_at, began_at + duration]  # wall clock, for the overlap
        return result

    # -- PRICES --

    def _pricing(self, raw_prices: dict, specs: dict[str, SymbolSpec], now: float):  # noqa: ANN202
        """Marks (NaN when missing or stale) and margin rates per symbol index.

        A held symbol without a spec counts at 100 % margin, as in the pre-trade path.
        """
        index = symbol_index()
        oldest = now - self.settings.price_stale_seconds
        exact = {}
        for symbol, raw in raw_prices.items():
            index(symbol.decode())
        size = len(index.names)
        marks = np.full(size, np.nan)
        imr = np.ones(size)
        mmr = np.ones(size)
        for symbol, raw in raw_prices.items():
            mark = decode_mark(raw)
            name = symbol.decode()
            if mark.ts >= oldest:
                marks[index.index[name]] = float(mark.price)
                exact[name] = mark.price
        for name, spec in specs.items():
            i = index.index[name]
            imr[i] = float(spec.imr)
            mmr[i] = float(spec.mmr)
        return marks, imr, mmr, exact

    # -- EXACT DECISIONS NEAR A THRESHOLD --

    def _settle_ambiguous(self, cache: ShardCache, sweep, hits, priced, config,  # noqa: ANN001
                          exact_marks: dict[str, Decimal]) -> None:
        ambiguous = sweep.liquidation_ambiguous & priced
        for hit in hits:
            ambiguous |= hit.ambiguous
        for slot in np.flatnonzero(ambiguous):
            account, _ = self.rt.store.read_account(cache.ids[slot])
            if account is None or any(s not in exact_marks for s in account.positions):
                continue
            specs = dict(config.specs)
            for s in account.positions:
                specs.setdefault(s, SymbolSpec(s, Decimal(1), Decimal(1)))
            account = replace(account, peak_equity=Decimal(repr(float(sweep.peak[slot]))),
                              daily_start_equity=Decimal(repr(float(sweep.daily[slot]))))
            metrics = compute_metrics(account.balance, account.positions, exact_marks, specs,
                                      account.peak_equity, account.daily_start_equity)
            sweep.liquidatable[slot] = is_liquidatable(metrics)
            names = {v.policy for v in evaluate_policies(metrics, config.policies,
                                                         account.account_id, None,
                                                         account.max_leverage)}
            for hit in hits:
                if hit.ambiguous[slot] or sweep.liquidation_ambiguous[slot]:
                    hit.violated[slot] = hit.policy.name in names

    # -- ACTIONS --

    def _act(self, cache: ShardCache, sweep, hits, liquidatable: np.ndarray,  # noqa: ANN001
             tick_ts: float, now: float, phases: "Phases") -> dict[str, Any]:
        ids = cache.ids
        counts = {"soft": 0, "hard": 0, "emergency": 0}
        masks = {t: np.zeros(cache.n, dtype=bool) for t in PolicyType}
        for hit in hits:
            n = int(hit.violated.sum())
            if n:
                counts[hit.policy.type.value] += n
                VIOLATIONS.labels(hit.policy.type.value, hit.policy.name).inc(n)
                masks[hit.policy.type] |= hit.violated
        started = self._liquidate(cache, sweep, liquidatable, tick_ts)
        phases.mark("liquidations")
        stops = self._emergency_stops(cache, hits, masks[PolicyType.EMERGENCY] & ~liquidatable)
        phases.mark("emergency_stops")
        trips = self._circuit_breaker(cache, masks[PolicyType.HARD], tick_ts)
        phases.mark("circuit_breaker")
        alerts = self._alerts(cache, hits, stops, trips, tick_ts, now)
        phases.mark("alerts")
        return {"violations": counts, "liquidations_started": started,
                "emergency_stops": len(stops), "breaker_trips": len(trips), "alerts": alerts,
                "accounts_in_breach": int(np.count_nonzero(
                    masks[PolicyType.SOFT] | masks[PolicyType.HARD]
                    | masks[PolicyType.EMERGENCY] | liquidatable))}

    def _liquidate(self, cache: ShardCache, sweep, liquidatable, tick_ts: float) -> int:  # noqa: ANN001
        slots = np.flatnonzero(liquidatable)
        if not len(slots):
            return 0
        pipe = self.redis.pipeline(transaction=False)
        planned = []
        for slot in slots:
            account_id = cache.ids[slot]
            episode = episodes.episode_id(account_id, tick_ts)
            # NX GET: opens the episode, or names the one already open.
            pipe.set(episodes.key(account_id), episode, nx=True, ex=episodes.EPISODE_TTL,
                     get=True)
            planned.append((slot, account_id, episode))
        running = pipe.execute()
        sends = []
        waiting = []
        for (slot, account_id, episode), current in zip(planned, running):
            if current is None:
                sends.append((slot, account_id, episode))
            else:
                waiting.append((slot, account_id, current.decode()))
        resent = self._lost_episodes(waiting, tick_ts)
        calls = []
        for slot, account_id, episode in sends + resent:
            reason = (f"equity {sweep.equity[slot]:.2f} below maintenance margin "
                      f"{sweep.maintenance[slot]:.2f}")
            args = [account_id, reason, episode]
            calls.append((args, repr(args)))
        send_many("risk.liquidate_account", calls)
        if sends:
            log_event(log, "liquidations started", shard=cache.shard, count=len(sends),
                      tick_ts=tick_ts)
        if resent:
            log_event(log, "liquidations sent again: no progress since their episode began",
                      logging.WARNING, shard=cache.shard, count=len(resent), tick_ts=tick_ts,
                      episodes=[e for _, _, e in resent][:20])
        return len(sends)

    def _lost_episodes(self, waiting: list[tuple[int, str, str]],
                       tick_ts: float) -> list[tuple[int, str, str]]:
        """Open episodes old enough to have started, whose task left no progress: their
        message was lost. Each is claimed for a re-send once per re-send period."""
        after = self.settings.liquidation_resend_seconds
        old = [(slot, account_id, episode) for slot, account_id, episode in waiting
               if (begun := episodes.started_at(episode)) is not None
               and tick_ts - begun >= after]
        if not old:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for _, _, episode in old:
            pipe.exists(liquidation_key(episode))
        progress = pipe.execute()
        lost = [item for item, started in zip(old, progress) if not started]
        if not lost:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for _, _, episode in lost:
            pipe.set(episodes.resend_key(episode), "1", nx=True, ex=max(int(after), 1))
        claimed = pipe.execute()
        return [item for item, won in zip(lost, claimed) if won]

    def _emergency_stops(self, cache: ShardCache, hits, candidates: np.ndarray) -> list[str]:  # noqa: ANN001
        """Halt and unwind accounts with an emergency violation, unless a liquidation is
        running for them (it goes first; the unwind follows on a later tick)."""
        slots = [s for s in np.flatnonzero(candidates) if cache.status[s] != HALTED]
        if not slots:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for slot in slots:
            pipe.exists(episodes.key(cache.ids[slot]))
        running = pipe.execute()
        stopped = []
        for slot, busy in zip(slots, running):
            if busy:
                continue
            account_id = cache.ids[slot]
            reasons = [f"{h.policy.name}: {h.policy.metric}={h.values[slot]:.4g} violates "
                       f"{h.policy.operator} {float(h.policy.threshold):g}"
                       for h in hits if h.policy.type is PolicyType.EMERGENCY and h.violated[slot]]
            result = control.trigger_emergency_stop(self.rt.store, "; ".join(reasons)[:1000],
                                                    "monitor", "account", account_id,
                                                    source="monitor")
            if result.get("success") and result.get("created"):
                after_emergency_stop(self.rt, result)
                cache.status[slot] = HALTED
                stopped.append(account_id)
        return stopped

    def _circuit_breaker(self, cache: ShardCache, hard: np.ndarray, tick_ts: float) -> list[str]:
        slots = [s for s in np.flatnonzero(hard) if cache.status[s] == ACTIVE]
        if not slots:
            return []
        window = self.settings.circuit_breaker_window_seconds
        tripped = self._breaker_script(args=[
            int(window * 1000), self.settings.circuit_breaker_violations,
            repr(tick_ts), *[cache.ids[s] for s in slots]])
        reduced = []
        for raw in tripped:
            account_id = raw.decode()
            try:
                _, changed = self.rt.store.set_account_state(
                    account_id, TradingState.REDUCING,
                    f"circuit breaker: {self.settings.circuit_breaker_violations} hard "
                    f"violations within {window:g} s", "monitor:circuit-breaker",
                    only_from=[TradingState.ACTIVE])
            except StateError:
                continue
            if changed:
                CIRCUIT_BREAKER_TRIPS.inc()
                cache.status[cache.slot_of[account_id]] = 1
                reduced.append(account_id)
        return reduced

    def _alerts(self, cache: ShardCache, hits, stops: list[str], trips: list[str],  # noqa: ANN001
                tick_ts: float, now: float) -> int:
        """Raise the violations not raised within the de-duplication window, and the
        tick's emergency stops and breaker trips. A policy breached by more than
        ``STORM_THRESHOLD`` accounts of the shard at once goes out as one summary; each
        breach is still claimed (so it stays quiet for the window) and journalled. At a
        shock that is thousands of breaches in a shard, so only what is sent is built
        as an alert: a breach is a claim (its de-duplication key and an id) until then."""
        window = self.settings.alert_dedup_seconds
        claimed = self._claimed
        # Alert ids: a random prefix per call and a counter, as unique as uuid4 hex
        # (thousands per shard-tick at a shock; uuid4 each was a tenth of the phase).
        prefix = uuid.uuid4().hex[:16]
        unknown = []  # (hit, slot, account id, dedup key, alert id)
        for hit in hits:
            name = hit.policy.name
            for slot in np.flatnonzero(hit.violated):
                account_id = cache.ids[slot]
                # A breach that persists tick after tick was claimed already: skip it
                # before building anything (thousands per shard in a broad move).
                if claimed.get((name, account_id), 0.0) >= now:
                    continue
                unknown.append((hit, slot, account_id,
                                alerting.dedup_key_of("policy_violation", name, account_id),
                                f"{prefix}{len(unknown):016x}"))
        extra = [alerting.make_alert("emergency", "emergency_stop",
                                     f"{a}: emergency stop by the monitor", account_id=a, at=now)
                 for a in stops]
        extra += [alerting.make_alert("critical", "circuit_breaker",
                                      f"{a}: circuit breaker tripped, account set to REDUCING",
                                      account_id=a, at=now) for a in trips]
        # Claimed for a short hold first, stretched to the window once sent (below): if
        # the send fails, the hold lapses and a later tick raises the alert again. Only
        # the alerts won are built.
        hold = min(window, CLAIM_HOLD_SECONDS)
        extra_claims = [(alerting.dedup_key(a), a["alert_id"]) for a in extra]
        claims = alerting.claim_keys(
            self.redis, [(key, alert_id) for _, _, _, key, alert_id in unknown] + extra_claims,
            hold)
        fresh = []
        for item, (ok, left) in zip(unknown, claims):
            hit, _, account_id, _, _ = item
            # Known taken (by us or by another process) until its window ends: no round
            # trip for it until then.
            claimed[(hit.policy.name, account_id)] = now + left
            if ok:
                fresh.append(item)
        won_extra = [(a, claim) for a, claim, (ok, _) in
                     zip(extra, extra_claims, claims[len(unknown):]) if ok]
        outgoing = [a for a, _ in won_extra]
        by_policy: dict[str, list] = {}
        for item in fresh:
            by_policy.setdefault(item[0].policy.name, []).append(item)
        for name, items in by_policy.items():
            if len(items) <= STORM_THRESHOLD:
                outgoing += [_violation_alert(hit, slot, account_id, alert_id, tick_ts, now)
                             for hit, slot, account_id, _, alert_id in items]
                continue
            policy = items[0][0].policy
            accounts = [account_id for _, _, account_id, _, _ in items]
            outgoing.append(alerting.make_alert(
                LEVEL_OF[policy.type], "policy_violation_storm",
                f"{len(items)} accounts of shard {cache.shard} breached {name}",
                policy=name, at=now,
                details={"count": len(items), "accounts": accounts[:200], "tick_ts": tick_ts}))
        if fresh:
            self.rt.store.journal({
                "t": "violations", "source": "monitor", "tick_ts": tick_ts, "at": now,
                "items": [{"account_id": account_id, "policy": hit.policy.name,
                           "policy_type": hit.policy.type.value, "metric": hit.policy.metric,
                           "value": _num(hit.values[slot]), "operator": hit.policy.operator,
                           "threshold": str(hit.policy.threshold)}
                          for hit, slot, account_id, _, _ in fresh]})
        send_many("risk.send_alert", [([alert], alerting.alert_repr(alert)) for alert in outgoing])
        held = [(key, alert_id) for _, _, _, key, alert_id in fresh] \
            + [claim for _, claim in won_extra]
        if held and window > hold:
            alerting.extend_keys(self.redis, held, window)
            for hit, _, account_id, _, _ in fresh:
                claimed[(hit.policy.name, account_id)] = now + window
        if len(claimed) > 500_000:
            self._claimed = {k: v for k, v in claimed.items() if v > now}
        return len(outgoing)

    # -- MONITOR MARKS --

    def _store_marks(self, cache: ShardCache, sweep, reset_day: bool, today: str,  # noqa: ANN001
                     version: bytes | None) -> None:
        """Persist raised peaks (and a day-start reset) for every process and the pre-trade
        path; skipped for a tick if an upsert overrode a slot meanwhile."""
        peak = np.where(sweep.unpriced, np.fmax(cache.peak_base, cache.hwm), sweep.peak)
        day = np.where(sweep.unpriced & np.isnan(cache.day), np.nan, sweep.daily) \
            if reset_day else cache.day
        grew = len(cache.hwm) != cache.n
        peak_changed = grew or not np.array_equal(peak, cache.hwm, equal_nan=True)
        if not (peak_changed or reset_day):
            return
        new_version = self._marks_script(
            keys=[keys.shard_hwm(cache.shard), keys.shard_day(cache.shard),
                  keys.shard_dayid(cache.shard), keys.shard_marks_version(cache.shard)],
            args=[version or b"", peak.astype("<f8").tobytes() if peak_changed else b"",
                  day.astype("<f8").tobytes() if reset_day else b"", today])
        if new_version:
            cache.hwm = peak
            cache.day = day
            cache.day_id = today
            cache.marks_version = str(new_version).encode()
        else:
            cache.marks_version = None  # re-read next tick

    def _journal_peaks(self, cache: ShardCache, sweep, now: float) -> None:  # noqa: ANN001
        """Every minute, send peaks the monitor raised to PostgreSQL (for a rebuild)."""
        if now - self._peaks_at.get(cache.shard, 0.0) < PEAK_JOURNAL_EVERY:
            return
        previous = self._journalled_peak.get(cache.shard)
        current = np.where(sweep.unpriced, np.nan, sweep.peak)
        if previous is None or len(previous) != len(current):
            previous = cache.peak_base.copy()
        raised = np.flatnonzero(current > previous)
        self._peaks_at[cache.shard] = now
        self._journalled_peak[cache.shard] = np.fmax(previous, current)
        if len(raised):
            self.rt.store.journal({"t": "peaks", "at": now, "items": [
                [cache.ids[s], repr(float(current[s]))] for s in raised]})

    # -- STRESS TEST --

    def _stress(self, cache: ShardCache, book: Book, marks, imr, mmr, peak, daily,  # noqa: ANN001
                shard: int, started: float) -> dict:
        sweep = evaluate(book, marks, imr, mmr, peak, daily)
        breach = sweep.liquidatable & ~sweep.unpriced
        slots = np.flatnonzero(breach)
        shortfall = sweep.maintenance - sweep.equity
        order = slots[np.argsort(-shortfall[slots])][:MAX_STRESS_ROWS]
        return {
            "shard": shard, "accounts": cache.n, "breaching": int(len(slots)),
            "shortfall": float(shortfall[slots].sum()) if len(slots) else 0.0,
            "unpriced": int(sweep.unpriced.sum()),
            "rows": [{"account_id": cache.ids[s], "equity": float(sweep.equity[s]),
                      "maintenance_margin": float(sweep.maintenance[s]),
                      "shortfall": float(shortfall[s])} for s in order],
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        }


class Phases:
    """Wall time of each step of a shard, in ms (where a slow shard spends it)."""

    def __init__(self, started: float) -> None:
        self.last = started
        self.ms: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = round((now - self.last) * 1000, 3)
        self.last = now


def _violation_alert(hit, slot: int, account_id: str, alert_id: str, tick_ts: float,  # noqa: ANN001
                     now: float) -> dict[str, Any]:
    policy = hit.policy
    return alerting.make_alert(
        LEVEL_OF[policy.type], "policy_violation",
        f"{account_id}: {policy.name} ({policy.type.value}) "
        f"{policy.metric}={_fmt(hit.values[slot])} violates {policy.operator} "
        f"{float(policy.threshold):g}",
        account_id=account_id, policy=policy.name, at=now, alert_id=alert_id,
        details={"metric": policy.metric, "value": _num(hit.values[slot]),
                 "threshold": float(policy.threshold), "tick_ts": tick_ts})


def _num(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _fmt(value: float) -> str:
    return "undefined" if not math.isfinite(value) else f"{value:.6g}"
