"""The 1 s monitor acting on what it finds: alerts, circuit breaker, emergency stops,
liquidations, storm summaries and violation records, through a real monitor worker
(prefork, two processes, on ``monitor,shards``) and real Redis and PostgreSQL.

Nothing consumes ``liquidation``, ``unwind`` or ``alerts`` here: the tests assert what
the monitor *enqueued* there (read from the broker's Redis lists) and the state it
changed, not what the action tasks do with it.

Most tests read one shared sweep (``policy_sweep``): a market where each account
crosses one kind of policy, swept by six ticks a second apart; each test checks one
outcome of it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from risk_tasks import episodes
from risk_tasks.actions import liquidation_key

from models.tables import EmergencyStopRow, TradingStateChangeRow, ViolationRow
from tests.integration.monitor_world import (
    MonitorWorld, Tick, shard_of, start_monitor_worker,
)

pytestmark = pytest.mark.integration

MAL, MMR = "Max Account Leverage", "Min Margin Ratio"
DDW, MDHL, EDS = "Daily Drawdown Warning", "Max Drawdown Hard Limit", "Emergency Drawdown Stop"
LEVEL = {MAL: "critical", MMR: "critical", MDHL: "critical", EDS: "emergency", DDW: "warning"}


# -- THE SHARED SWEEP --

@dataclass
class Sweep:
    world: MonitorWorld
    ticks: list[Tick] = field(default_factory=list)
    alerts: list[list[dict]] = field(default_factory=list)  # new alerts, per tick
    liquidations: list[list[list]] = field(default_factory=list)  # new messages, per tick
    unwinds: list[list[list]] = field(default_factory=list)
    statuses: list[dict[str, str]] = field(default_factory=list)  # after each tick
    # At the end of the sweep (read before any other test empties the stores):
    state_changes: list[Any] = field(default_factory=list)  # TradingStateChangeRow
    stops: list[Any] = field(default_factory=list)  # EmergencyStopRow
    violations: list[Any] = field(default_factory=list)  # ViolationRow
    episodes: dict[str, str | None] = field(default_factory=dict)
    accounts: dict[str, Any] = field(default_factory=dict)  # engine Account, read back
    window_ms: dict[str, int] = field(default_factory=dict)  # alert id -> its claim's PTTL

    def record(self, tick: Tick) -> None:
        seen = sum(len(x) for x in self.alerts)
        self.alerts.append(self.world.alerts()[seen:])
        seen = sum(len(x) for x in self.liquidations)
        self.liquidations.append(self.world.liquidations()[seen:])
        seen = sum(len(x) for x in self.unwinds)
        self.unwinds.append(self.world.unwinds()[seen:])
        self.statuses.append({a: self.world.status(a) for a in ACCOUNTS})
        self.ticks.append(tick)

    def finish(self) -> None:
        world = self.world
        world.drain()
        self.state_changes = world.rows(TradingStateChangeRow)
        self.stops = world.rows(EmergencyStopRow)
        self.violations = world.rows(ViolationRow)
        self.episodes = {a: world.episode(a) for a in ACCOUNTS}
        self.accounts = {a: world.rt.store.read_account(a)[0] for a in ACCOUNTS}
        from risk_tasks import alerting
        self.window_ms = {a["alert_id"]: world.rt.redis.pttl(alerting.dedup_key(a))
                          for batch in self.alerts for a in batch}

    def changes(self, account_id: str, new_state: str) -> list[Any]:
        return [c for c in self.state_changes
                if c.account_id == account_id and c.new_state == new_state]

    def alerts_for(self, account_id: str, tick: int | None = None) -> list[dict]:
        batches = self.alerts if tick is None else [self.alerts[tick]]
        return [a for batch in batches for a in batch if a["account_id"] == account_id]


ACCOUNTS = ("soft", "hard", "emergency", "liquidatable", "both", "healthy", "unpriced")


def arrange_market(world: MonitorWorld) -> None:
    """BTC (10x, maintenance 5 %) at 100, LEV (100x) at 100, NOPX with no price.

    soft: 10 000, long 10 BTC (its day-start goes to 12 000 after the first tick).
    hard: 10 000, long 1 200 LEV: leverage 12 > 10, nothing else.
    emergency: 10 000, long 10 BTC, peak 20 000: drawdown 0.5 (hard and emergency).
    liquidatable: 400, long 100 BTC: equity 400 < maintenance 500 (and leverage 25,
      margin ratio 0.4: hard), drawdown 0.
    both: as liquidatable with peak 1 000: also drawdown 0.6 (hard and emergency).
    healthy: 10 000, long 10 BTC. unpriced: long NOPX, peak far above its balance.
    """
    world.policies()
    world.symbol("BTC", "0.10", "0.05")
    world.symbol("LEV", "0.01", "0.005")
    world.symbol("NOPX", "0.10", "0.05")
    world.prices(BTC=100, LEV=100)
    world.account("soft", 10_000)
    world.position("soft", "BTC", 10, 100)
    world.account("hard", 10_000)
    world.position("hard", "LEV", 1_200, 100)
    world.account("emergency", 10_000, peak_equity=20_000)
    world.position("emergency", "BTC", 10, 100)
    world.account("liquidatable", 400)
    world.position("liquidatable", "BTC", 100, 100)
    world.account("both", 400, peak_equity=1_000)
    world.position("both", "BTC", 100, 100)
    world.account("healthy", 10_000)
    world.position("healthy", "BTC", 10, 100)
    world.account("unpriced", 100, peak_equity=10_000)
    world.position("unpriced", "NOPX", 10, 100)


@pytest.fixture(scope="module")
def policy_sweep(app):  # noqa: ANN001, ANN201
    import os

    from risk_tasks.runtime import Runtime, reset_runtime
    from tests.conftest import reset_database
    from tests.support.workers import PrivateBroker

    reset_runtime(close=True)
    rt = Runtime()
    rt.redis.flushdb()
    reset_database(rt)
    base = os.environ["RISK_BROKER_URL"].rsplit("/", 1)[0]
    broker = PrivateBroker(broker_url=f"{base}/3", backend_url=f"{base}/4")
    world = MonitorWorld(rt, broker)
    try:
        worker = start_monitor_worker(broker)
        arrange_market(world)
        sweep = Sweep(world)
        sweep.record(world.tick())
        # The soft account's day started higher: 12 000 (drawdown 1/6 > 0.10).
        world.account("soft", 10_000, daily_start_equity=12_000)
        for _ in range(5):
            sweep.record(world.tick())
        # The sweep is over: its worker must not take the ticks of later tests.
        worker.stop()
        sweep.finish()
        yield sweep
    finally:
        world.close()
        broker.close()
        rt.close()


def kinds(alerts: list[dict]) -> Counter:
    return Counter((a["kind"], a["policy"], a["account_id"], a["level"]) for a in alerts)


# -- SOFT --

def test_soft_violation_sends_one_warning_and_nothing_else(policy_sweep):
    sweep = policy_sweep
    # then: the warning goes out on the first tick that sees the higher day start, once
    assert sweep.alerts_for("soft", tick=0) == []
    [alert] = sweep.alerts_for("soft")
    assert alert in sweep.alerts[1]
    assert (alert["level"], alert["kind"], alert["policy"]) == ("warning", "policy_violation", DDW)
    assert alert["details"]["value"] == pytest.approx(2_000 / 12_000, rel=1e-9)
    # and no stop, no breaker, no liquidation
    assert all(s["soft"] == "ACTIVE" for s in sweep.statuses)
    assert "soft" not in {args[0] for batch in sweep.liquidations + sweep.unwinds for args in batch}
    assert [t.aggregate["violations"]["soft"] for t in sweep.ticks] == [0, 1, 1, 1, 1, 1]


# -- HARD AND THE CIRCUIT BREAKER --

def test_hard_violation_alerts_critical_and_trips_the_breaker_once_after_five_ticks(policy_sweep):
    sweep = policy_sweep
    # then: one critical alert on the first tick
    assert kinds(sweep.alerts_for("hard", tick=0)) == Counter(
        {("policy_violation", MAL, "hard", "critical"): 1})
    assert sweep.alerts_for("hard", tick=0)[0]["details"]["value"] == pytest.approx(12.0)
    # and the account stays ACTIVE for four ticks, goes REDUCING on the fifth, once
    assert [s["hard"] for s in sweep.statuses] == ["ACTIVE"] * 4 + ["REDUCING"] * 2
    assert kinds(sweep.alerts_for("hard", tick=4)) == Counter(
        {("circuit_breaker", None, "hard", "critical"): 1})
    assert [t.aggregate["breaker_trips"] for t in sweep.ticks] == [0, 0, 0, 0, 3, 0]
    changes = sweep.changes("hard", "REDUCING")
    assert len(changes) == 1
    assert changes[0].old_state == "ACTIVE" and changes[0].changed_by == "monitor:circuit-breaker"
    # and a hard violation never stops or liquidates
    assert "hard" not in {args[0] for batch in sweep.liquidations + sweep.unwinds for args in batch}


# -- EMERGENCY --

def test_emergency_violation_halts_the_account_records_the_stop_and_enqueues_one_unwind(
        policy_sweep):
    sweep = policy_sweep
    # then: HALTED from the first tick on
    assert [s["emergency"] for s in sweep.statuses] == ["HALTED"] * 6
    assert sweep.ticks[0].aggregate["emergency_stops"] == 1
    assert [t.aggregate["emergency_stops"] for t in sweep.ticks[1:]] == [0] * 5
    # and exactly one unwind, on the first tick, naming the recorded stop
    unwinds = [args for batch in sweep.unwinds for args in batch]
    assert unwinds == sweep.unwinds[0] == [["emergency", unwinds[0][1]]]
    [stop] = [s for s in sweep.stops if s.account_id == "emergency"]
    assert stop.stop_id == unwinds[0][1]
    assert (stop.scope, stop.triggered_by, stop.status) == ("account", "monitor", "active")
    assert EDS in stop.reason
    assert stop.accounts_to_unwind == 1
    [halt] = sweep.changes("emergency", "HALTED")
    assert (halt.old_state, halt.stop_id) == ("ACTIVE", stop.stop_id)
    # and the alerts: both policies and the stop itself, once each
    assert kinds(sweep.alerts_for("emergency")) == Counter({
        ("policy_violation", MDHL, "emergency", "critical"): 1,
        ("policy_violation", EDS, "emergency", "emergency"): 1,
        ("emergency_stop", None, "emergency", "emergency"): 1,
    })
    # and no liquidation: the account is not below maintenance
    assert "emergency" not in {args[0] for batch in sweep.liquidations for args in batch}


# -- LIQUIDATION --

def test_liquidatable_account_gets_one_liquidation_per_episode(policy_sweep):
    sweep = policy_sweep
    first = sweep.ticks[0]
    # then: one liquidate_account on the first tick, with its episode id
    mine = [args for args in sweep.liquidations[0] if args[0] == "liquidatable"]
    assert len(mine) == 1
    account_id, reason, episode = mine[0]
    assert episode == f"liq:liquidatable:{int(round(first.tick_ts * 1000))}"
    assert "400.00" in reason and "500.00" in reason
    # and the episode is open, so the later ticks that still see the breach send none
    assert sweep.episodes["liquidatable"] == episode
    assert all(args[0] != "liquidatable" for batch in sweep.liquidations[1:] for args in batch)
    assert [t.aggregate["liquidations_started"] for t in sweep.ticks] == [2, 0, 0, 0, 0, 0]
    # and no emergency stop or unwind for it
    assert "liquidatable" not in {args[0] for batch in sweep.unwinds for args in batch}
    assert sweep.statuses[0]["liquidatable"] == "ACTIVE"


def test_liquidatable_and_emergency_account_is_liquidated_first_and_never_unwound(
        policy_sweep):
    sweep = policy_sweep
    # then: the liquidation goes out on the first tick
    assert [args[0] for args in sweep.liquidations[0]].count("both") == 1
    assert sweep.episodes["both"] is not None
    # and no stop or unwind while its episode runs (the unwind would follow, later)
    assert "both" not in {args[0] for batch in sweep.unwinds for args in batch}
    assert "HALTED" not in {s["both"] for s in sweep.statuses}
    assert [s for s in sweep.stops if s.account_id == "both"] == []
    # and its policy alerts went out once each
    assert kinds(sweep.alerts_for("both")) == Counter({
        ("policy_violation", MAL, "both", "critical"): 1,
        ("policy_violation", MMR, "both", "critical"): 1,
        ("policy_violation", MDHL, "both", "critical"): 1,
        ("policy_violation", EDS, "both", "emergency"): 1,
        ("circuit_breaker", None, "both", "critical"): 1,
    })


# -- ALERTS AND RECORDS --

def test_alerts_are_deduplicated_across_ticks(policy_sweep):
    sweep = policy_sweep
    every = [a for batch in sweep.alerts for a in batch]
    # then: no (kind, policy, account) alerted twice in six ticks
    keys = Counter((a["kind"], a["policy"], a["account_id"]) for a in every)
    assert [k for k, n in keys.items() if n > 1] == []
    # and ticks 3, 4 and 6 (the fourth index is the breaker) sent nothing new
    assert [len(sweep.alerts[i]) for i in (2, 3, 5)] == [0, 0, 0]
    assert [t.aggregate["alerts"] for t in sweep.ticks] == [len(b) for b in sweep.alerts]
    # and every alert has the shape of the contract
    for alert in every:
        assert set(alert) >= {"alert_id", "level", "kind", "policy", "account_id", "message",
                              "details", "at"}
        assert alert["level"] in ("warning", "critical", "emergency")


def test_a_sent_alert_holds_its_whole_dedup_window(policy_sweep):
    # then: each alert the monitor sent stretched its claim from the 30 s hold (taken
    # before sending) to the 5-minute window
    assert policy_sweep.window_ms
    assert all(ms > 60_000 for ms in policy_sweep.window_ms.values()), policy_sweep.window_ms


def test_violations_are_recorded_in_postgres_once_per_alert(policy_sweep):
    rows = policy_sweep.violations
    found = Counter((r.account_id, r.policy_name, r.policy_type, r.source) for r in rows)
    assert found == Counter({
        ("soft", DDW, "soft", "monitor"): 1,
        ("hard", MAL, "hard", "monitor"): 1,
        ("emergency", MDHL, "hard", "monitor"): 1,
        ("emergency", EDS, "emergency", "monitor"): 1,
        ("liquidatable", MAL, "hard", "monitor"): 1,
        ("liquidatable", MMR, "hard", "monitor"): 1,
        ("both", MAL, "hard", "monitor"): 1,
        ("both", MMR, "hard", "monitor"): 1,
        ("both", MDHL, "hard", "monitor"): 1,
        ("both", EDS, "emergency", "monitor"): 1,
    })
    hard = next(r for r in rows if r.account_id == "hard")
    assert float(hard.value) == pytest.approx(12.0)
    assert (hard.metric, hard.operator, float(hard.threshold)) == ("leverage",
                                                                   "less_than_or_equal", 10.0)
    assert float(hard.tick_ts) == pytest.approx(policy_sweep.ticks[0].tick_ts, abs=1e-3)


def test_healthy_and_unpriced_accounts_are_left_alone(policy_sweep):
    sweep = policy_sweep
    for account_id in ("healthy", "unpriced"):
        assert sweep.alerts_for(account_id) == []
        assert {s[account_id] for s in sweep.statuses} == {"ACTIVE"}
        assert account_id not in {a[0] for b in sweep.liquidations + sweep.unwinds for a in b}
    assert [t.aggregate["unpriced_accounts"] for t in sweep.ticks] == [1] * 6
    # and the unpriced account's peak was neither raised nor lowered
    assert sweep.accounts["unpriced"].peak_equity == 10_000


def test_aggregate_counts_what_each_tick_found(policy_sweep):
    first, second = policy_sweep.ticks[:2]
    # then: tick 1: hard = leverage (hard) + drawdown (emergency) + 2 (liquidatable) + 3
    # (both); emergency = emergency + both; nothing failed
    assert first.aggregate["accounts"] == len(ACCOUNTS)
    assert first.aggregate["shards"] == 4
    assert first.aggregate["violations"] == {"soft": 0, "hard": 7, "emergency": 2}
    assert second.aggregate["violations"] == {"soft": 1, "hard": 7, "emergency": 2}
    assert all(t.aggregate["failed_shards"] == [] for t in policy_sweep.ticks)
    assert [t.aggregate["tick_ts"] for t in policy_sweep.ticks] == [
        t.tick_ts for t in policy_sweep.ticks]


def test_alert_details_carry_the_metric_value_and_tick(policy_sweep):
    first = policy_sweep.ticks[0]
    [alert] = [a for a in policy_sweep.alerts_for("liquidatable") if a["policy"] == MMR]
    assert alert["details"]["metric"] == "margin_ratio"
    assert alert["details"]["value"] == pytest.approx(0.4)
    assert alert["details"]["threshold"] == 1.0
    assert alert["details"]["tick_ts"] == first.tick_ts


# -- A MARKET-WIDE MOVE --

@pytest.fixture()
def monitor(app, rt, private_broker):  # noqa: ANN001, ANN201
    world = MonitorWorld(rt, private_broker)
    start_monitor_worker(private_broker)
    yield world
    world.close()


def test_market_wide_move_sends_storm_summaries_liquidates_each_and_keeps_trading(monitor):
    # given: 200 accounts at leverage 8.3 and 100 at 2, all long ALT at 100
    world = monitor
    world.policies()
    world.symbol("ALT", "0.10", "0.05")
    world.prices(ALT=100)
    weak = [f"weak-{i}" for i in range(200)]
    strong = [f"strong-{i}" for i in range(100)]
    created = world.populate([(a, 1_200, {}, [("ALT", 100, 100)]) for a in weak]
                             + [(a, 5_000, {}, [("ALT", 100, 100)]) for a in strong])
    assert created == 300
    calm = world.tick()
    assert calm.aggregate["accounts"] == 300 and world.alerts() == []
    # when: ALT falls 8 %: the weak are below maintenance (equity 400 < 460) and breach
    # every default policy; the strong only lose 16 % of their day
    world.prices(ALT=92)
    crash = world.tick()
    # then: one liquidation per weak account, each once
    liquidated = Counter(args[0] for args in world.liquidations())
    assert liquidated == Counter({a: 1 for a in weak})
    assert crash.aggregate["liquidations_started"] == 200
    # and per shard and policy: a summary when more than 20 accounts breach it, else one
    # alert each
    breaching = {MAL: weak, MMR: weak, MDHL: weak, EDS: weak, DDW: weak + strong}
    expected: Counter = Counter()
    summaries: dict[tuple[int, str], set[str]] = {}
    for policy, accounts in breaching.items():
        for shard in range(4):
            mine = {a for a in accounts if shard_of(a) == shard}
            if len(mine) > 20:
                expected[("policy_violation_storm", policy, None, LEVEL[policy])] += 1
                summaries[(shard, policy)] = mine
            else:
                for a in mine:
                    expected[("policy_violation", policy, a, LEVEL[policy])] += 1
    alerts = world.alerts()
    assert kinds(alerts) == expected
    assert len(alerts) < 40  # instead of 1 100
    for alert in alerts:
        if alert["kind"] == "policy_violation_storm":
            shard = int(alert["message"].split(" of shard ")[1].split()[0])
            accounts = summaries[(shard, alert["policy"])]
            assert alert["details"]["count"] == len(accounts)
            assert set(alert["details"]["accounts"]) == accounts
    # and nothing stops: no account halted (the liquidations go first), no unwind, the
    # platform stays ACTIVE
    assert world.unwinds() == []
    assert world.rt.store.non_active_accounts() == []
    assert world.rt.store.platform_state()["state"] == "ACTIVE"
    assert crash.aggregate["emergency_stops"] == 0
    assert crash.aggregate["violations"] == {"soft": 300, "hard": 600, "emergency": 200}
    # and every violation is recorded in PostgreSQL
    world.drain()
    rows = Counter(r.policy_name for r in world.rows(ViolationRow))
    assert rows == Counter({MAL: 200, MMR: 200, MDHL: 200, EDS: 200, DDW: 300})


# -- DAY-START EQUITY --

def test_day_start_equity_ingested_during_the_day_is_kept_by_the_first_tick(monitor):
    # given: an account whose day started at 12 000 and is now worth 10 000
    world = monitor
    world.policies()
    world.symbol("BTC")
    world.prices(BTC=100)
    world.account("A", 10_000, daily_start_equity=12_000)
    world.position("A", "BTC", 10, 100)
    # when
    tick = world.tick()
    # then: a 1/6 daily drawdown is a Daily Drawdown Warning
    assert tick.aggregate["violations"]["soft"] == 1
    account, _ = world.rt.store.read_account("A")
    assert account.daily_start_equity == 12_000


# -- A LOST LIQUIDATION MESSAGE --

class _AnyReason(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and "below maintenance margin" in other

    __hash__ = str.__hash__


ANY_REASON = _AnyReason()


def test_episode_whose_message_was_lost_is_sent_again_once_per_period(monitor):
    # given: a liquidatable account whose episode opened 40 s ago, but whose task never
    # started (its message was lost by a worker killed while fetching it)
    world = monitor
    world.policies()
    world.symbol("BTC")
    world.prices(BTC=100)
    world.account("lost", 1_000)
    world.position("lost", "BTC", 100, 109.6)  # equity 40 < maintenance 500
    world.account("slow", 1_000)
    world.position("slow", "BTC", 100, 109.6)
    tick_ts = world.next_tick_ts()
    lost = f"liq:lost:{int(round((tick_ts - 40) * 1000))}"
    slow = f"liq:slow:{int(round((tick_ts - 40) * 1000))}"
    world.rt.redis.set(episodes.key("lost"), lost, ex=120)
    world.rt.redis.set(episodes.key("slow"), slow, ex=120)
    # and the other one's task is running (it left progress)
    world.rt.redis.set(liquidation_key(slow), b'{"status": "running"}', ex=120)
    # when
    first = world.tick(tick_ts)
    # then: the lost episode is sent again under its own id; the running one is not
    assert [args for args in world.liquidations()] == [["lost", ANY_REASON, lost]]
    assert first.aggregate["liquidations_started"] == 0  # no new episode
    # and the next ticks, within the re-send period, do not send it again
    world.tick()
    world.tick()
    assert len(world.liquidations()) == 1
    assert world.episode("lost") == lost
