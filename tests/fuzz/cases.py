"""Hostile inputs for every task, every ``riskctl load`` line and every price tick, and
the judge of what the engine answered.

A case is a valid argument set with one thing broken: a field replaced by a hostile
value (NaN, infinities, negative or zero numbers, huge numbers, wrong types, unicode,
lone surrogates, deep nesting, oversized strings), a field removed, an unknown field
added, or the whole argument replaced. ``names`` lists the field names a refusal of
that case must mention. The same strategies drive the in-suite tests
(tests/reliability/test_fuzz.py) and the 100,000-case script (tests/fuzz/run_fuzz.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from hypothesis import strategies as st


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


HUGE_TEXT = "x" * 200_000
NUMBERS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0, 0.0, -0.0, -1, -1e-9, 1e-30, 1e308,
                     -1e308, 10 ** 40, -(10 ** 40), 2 ** 63, 2 ** 64 + 1, 10 ** 400, 5e-324]),
    st.sampled_from(["NaN", "nan", "inf", "-Infinity", "1e999", "-1", "0", "1e-999", "0x10",
                     "1_000", " 5 ", "", "١٢٣", "1e100000", "9" * 70, "1.5.5", "--1"]),
    st.integers(), st.floats(),
)
TEXTS = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["", " ", " BTC", "BTC ", "\x00", "\n", "\u200b", "\ud800", "a\udfffb",
                     "💥" * 40, "ä" * 129, "x" * 129, "x" * 33, "DROP TABLE accounts;--",
                     "risk:acct:A", "*", "${jndi:ldap://x}", "\u202egnp.exe"]),
)
ODD = st.one_of(
    st.none(), st.booleans(), st.just([]), st.just({}), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just(nested(300)), st.just(HUGE_TEXT), st.just({"$gt": ""}),
)
HOSTILE = st.one_of(NUMBERS, TEXTS, ODD)


@dataclass
class Case:
    task: str
    args: list
    kwargs: dict = field(default_factory=dict)
    names: tuple[str, ...] = ()  # a refusal must name one of these (empty: any refusal)
    how: str = ""

    def describe(self) -> str:
        return f"{self.task} [{self.how}] {repr(self.args)[:300]} {repr(self.kwargs)[:200]}"


def _mutated(draw: Callable, base: dict, whole_name: str, unknown_ok: bool = True
             ) -> tuple[Any, tuple[str, ...], str]:
    """``base`` with one thing broken; returns (value, names a refusal must mention, how)."""
    how = draw(st.sampled_from(["replace", "replace", "replace", "delete", "unknown", "whole"]))
    value = dict(base)
    if how == "replace":
        key = draw(st.sampled_from(sorted(base)))
        value[key] = draw(HOSTILE)
        # an object in place of a field is refused for whatever is inside it
        return value, () if isinstance(value[key], dict) else (key,), f"replace {key}"
    if how == "delete":
        key = draw(st.sampled_from(sorted(base)))
        del value[key]
        return value, (key,), f"delete {key}"
    if how == "unknown":
        key = draw(st.one_of(st.sampled_from(["reduceOnly", "qty", "Price", "__proto__",
                                              "x" * 1000, "💥", ""]),
                             st.text(min_size=1, max_size=10)))
        if key in base:
            key = key + "_x"
        value[key] = draw(HOSTILE)
        return value, (key[:64],), "unknown field"
    whole = draw(HOSTILE)
    # A hostile object in place of the argument is refused for whatever field it has.
    return whole, () if isinstance(whole, dict) else (whole_name,), "whole argument"


ORDER = {"order_id": "fz-1", "account_id": "FA", "symbol": "BTC", "side": "BUY",
         "quantity": 1, "order_type": "LIMIT", "price": 100}
ACCOUNT = {"account_id": "FB", "balance": 50_000, "status": "ACTIVE", "peak_equity": 50_000,
           "daily_start_equity": 50_000, "max_leverage": 10}
FILL = {"fill_id": "ff-1", "account_id": "FA", "symbol": "BTC", "side": "BUY", "quantity": 1,
        "price": 100}
SYMBOL_LINE = {"type": "symbol", "symbol": "FZ", "imr": 0.1, "mmr": 0.05,
               "price_collar": 0.05, "max_order_notional": 1_000_000}
POLICY_LINE = {"type": "policy", "name": "Fuzz Leverage", "policy_type": "hard",
               "metric": "leverage", "operator": "less_than_or_equal", "threshold": 50,
               "scope": "account", "enabled": True, "priority": 1}


@st.composite
def order_cases(draw: Callable) -> Case:
    order, names, how = _mutated(draw, ORDER, "order")
    if isinstance(order, dict) and "order_id" in order and isinstance(order["order_id"], str):
        order["order_id"] = f"{order['order_id']}-{draw(st.integers(0, 10 ** 9))}"
    return Case("risk.check_order", [order], names=names, how=how)


@st.composite
def batch_cases(draw: Callable) -> Case:
    orders = [draw(order_cases()).args[0] for _ in range(draw(st.integers(0, 4)))]
    if draw(st.booleans()):
        return Case("risk.check_order_batch", [draw(HOSTILE)], names=("order", "batch"),
                    how="whole argument")
    return Case("risk.check_order_batch", [orders], how="list of broken orders")


@st.composite
def account_cases(draw: Callable) -> Case:
    account, names, how = _mutated(draw, ACCOUNT, "account")
    return Case("risk.upsert_account", [account], names=names, how=how)


@st.composite
def fill_cases(draw: Callable) -> Case:
    fill, names, how = _mutated(draw, FILL, "fill")
    if isinstance(fill, dict) and isinstance(fill.get("fill_id"), str):
        fill["fill_id"] = f"{fill['fill_id']}-{draw(st.integers(0, 10 ** 9))}"
    return Case("risk.apply_fill", [fill], names=names, how=how)


NOW = "<now>"  # replaced by the current time when the case runs


@st.composite
def price_cases(draw: Callable) -> Case:
    how = draw(st.sampled_from(["mark", "symbol", "ts", "whole", "many"]))
    prices: Any = {"BTC": 100.0}
    ts: Any = NOW
    if how == "mark":
        prices = {"BTC": draw(HOSTILE)}
        names: tuple[str, ...] = ("prices.BTC", "prices")
    elif how == "symbol":
        prices = {draw(TEXTS): 100.0}
        names = ("symbol",)
    elif how == "ts":
        ts = draw(HOSTILE)
        names = ("ts",)
    elif how == "whole":
        prices = draw(HOSTILE)
        names = () if isinstance(prices, dict) else ("prices",)
    else:
        prices = {f"S{i}": 1.0 for i in range(10_001)}
        names = ("prices",)
    return Case("risk.ingest_prices", [prices, ts], names=names, how=how)


@st.composite
def metrics_cases(draw: Callable) -> Case:
    return Case("risk.get_risk_metrics", [draw(HOSTILE)], names=("account_id",), how="id")


CONTROL_BASE = {"reason": "fuzz", "triggered_by": "ops", "scope": "account",
                "account_id": "FA"}


@st.composite
def stop_cases(draw: Callable) -> Case:
    """Stops with at least one bad argument (a valid stop would halt the fuzzed account)."""
    key = draw(st.sampled_from(["reason", "triggered_by", "scope", "account_id"]))
    not_an_id = st.one_of(st.sampled_from(["", " ops", "ops ", "\ud800", "\x00", "a\nb", "x" * 129]),
                          ODD.filter(lambda v: v is not None), st.integers(), st.floats())
    bad = {"reason": st.one_of(st.sampled_from(["", "   ", "x" * 1001, HUGE_TEXT, "a\ud800"]),
                               ODD.filter(lambda v: not isinstance(v, str)), st.integers(),
                               st.floats()),
           "triggered_by": not_an_id,
           "scope": st.one_of(TEXTS.filter(lambda s: s not in ("global", "account")), ODD,
                              NUMBERS),
           "account_id": st.one_of(not_an_id, TEXTS.map(lambda s: f"nobody-{s}"))}[key]
    kwargs = dict(CONTROL_BASE, **{key: draw(bad)})
    names = (key, "unknown account") if key == "account_id" else (key,)
    return Case("risk.trigger_emergency_stop", [], kwargs, names=names, how=f"bad {key}")


@st.composite
def resume_cases(draw: Callable) -> Case:
    """Resumes by hostile names and reasons (never an allowed operator with a valid call)."""
    kwargs = {"authorized_by": draw(st.one_of(TEXTS, ODD, NUMBERS)),
              "reason": draw(st.one_of(TEXTS, ODD, NUMBERS)),
              "scope": draw(st.sampled_from(["global", "account"])),
              "account_id": "FA"}
    if kwargs["scope"] == "global":
        kwargs["account_id"] = None
    return Case("risk.re_enable_trading", [], kwargs,
                names=("authorized_by", "reason", "not allowed"), how="hostile resume")


@st.composite
def stress_cases(draw: Callable) -> Case:
    how = draw(st.sampled_from(["move", "symbol", "whole"]))
    if how == "move":
        shocks: Any = {"BTC": draw(HOSTILE)}
    elif how == "symbol":
        shocks = {draw(TEXTS): draw(HOSTILE)}
    else:
        shocks = draw(HOSTILE)
    return Case("risk.stress_test", [shocks], names=("shock", "symbol", "BTC"), how=how)


@st.composite
def load_line_cases(draw: Callable) -> Case:
    kind = draw(st.sampled_from(["order-like", "symbol", "policy", "account", "fill", "prices",
                                 "raw"]))
    if kind == "raw":
        line = draw(st.one_of(st.text(max_size=50), st.sampled_from(
            ["", "{", "[]", "null", '{"type": 5}', '{"type": "galaxy"}', "\ud800", "x" * 2_000_000,
             '{"type": "prices", "prices": {"BTC": 1e999}, "ts": 1}'])))
        return Case("load", [line], names=("line", "type", "prices", "ts"), how="raw line")
    base = {"symbol": SYMBOL_LINE, "policy": POLICY_LINE,
            "account": dict(ACCOUNT, type="account"), "fill": dict(FILL, type="fill"),
            "prices": {"type": "prices", "prices": {"BTC": 100}, "ts": 1.0},
            "order-like": {"type": "order", **ORDER}}[kind]
    value, names, how = _mutated(draw, base, "line")
    if how == "whole argument":
        names = ("line", "type")
    if kind == "fill" and isinstance(value, dict) and isinstance(value.get("fill_id"), str):
        value["fill_id"] = f"{value['fill_id']}-{draw(st.integers(0, 10 ** 9))}"
    if kind == "order-like":
        names = ("type",)
    if "type" in names:
        names = names + ("type",)
    return Case("load", [value], names=names + ("line",) if names else (), how=f"{kind}: {how}")


TASK_CASES = {
    "risk.check_order": order_cases(),
    "risk.check_order_batch": batch_cases(),
    "risk.upsert_account": account_cases(),
    "risk.apply_fill": fill_cases(),
    "risk.ingest_prices": price_cases(),
    "risk.get_risk_metrics": metrics_cases(),
    "risk.trigger_emergency_stop": stop_cases(),
    "risk.re_enable_trading": resume_cases(),
}


# -- ACTION TASKS (bad input is dead-lettered at once) --

@st.composite
def action_cases(draw: Callable) -> Case:
    """Liquidations, unwinds and alerts with a broken argument."""
    task = draw(st.sampled_from(["risk.liquidate_account", "risk.unwind_account",
                                 "risk.send_alert"]))
    not_an_id = st.one_of(st.sampled_from(["", " A", "\x00", "x" * 129]), st.integers(),
                          st.floats(), ODD.filter(lambda v: not isinstance(v, str)))
    if task == "risk.liquidate_account":
        args = ["FA", "fuzz", f"ep-{draw(st.integers(0, 10 ** 9))}"]
        at = draw(st.integers(0, 2))
        args[at] = draw(not_an_id if at != 1 else st.one_of(
            st.sampled_from(["", "   "]), st.integers(), st.floats(),
            ODD.filter(lambda v: not isinstance(v, str))))
        names = (("account_id", "reason", "episode_id")[at],)
    elif task == "risk.unwind_account":
        args = ["FA", "stop-fuzz"]
        at = draw(st.integers(0, 1))
        args[at] = draw(not_an_id)
        names = (("account_id", "stop_id")[at],)
    else:
        args = [draw(st.one_of(NUMBERS, TEXTS, ODD.filter(lambda v: v != {})))]
        names = ("alert",)
    return Case(task, args, names=names, how="bad argument")
