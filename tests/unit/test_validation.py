"""Input validation at the boundary: good input in, engine data out; bad input refused
with ``InvalidInput`` naming the offending field, and never any other exception."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk_tasks.engine.model import (
    Fill, Order, OrderType, Policy, PolicyType, Side, SymbolSpec, TradingState,
)
from risk_tasks.engine.validation import (
    ORDER_FIELDS, InvalidInput, validate_account, validate_fill, validate_order,
    validate_policy, validate_prices, validate_symbol,
)

GOOD_ORDER = {"order_id": "ord-1", "account_id": "acct-1", "symbol": "BTC", "side": "BUY",
              "quantity": "1.5", "order_type": "LIMIT", "price": "100.25"}
GOOD_MARKET = {"order_id": "ord-1", "account_id": "acct-1", "symbol": "BTC", "side": "SELL",
               "quantity": 2, "order_type": "MARKET"}
GOOD_FILL = {"fill_id": "f-1", "account_id": "acct-1", "symbol": "BTC", "side": "BUY",
             "quantity": "1", "price": "100"}
GOOD_POLICY = {"name": "Max Account Leverage", "type": "hard", "metric": "leverage",
               "operator": "less_than_or_equal", "threshold": 10}


def with_(base: dict, **changes: Any) -> dict:
    out = dict(base)
    out.update(changes)
    return out


def without(base: dict, key: str) -> dict:
    return {k: v for k, v in base.items() if k != key}


def refused(call: Callable[[], Any]) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        call()
    return info.value


BAD_NUMBERS = [
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(float("-inf"), id="-inf"),
    pytest.param("NaN", id="'NaN'"),
    pytest.param("nan", id="'nan'"),
    pytest.param("sNaN", id="'sNaN'"),
    pytest.param("Infinity", id="'Infinity'"),
    pytest.param("-Infinity", id="'-Infinity'"),
    pytest.param("inf", id="'inf'"),
    pytest.param(True, id="True"),
    pytest.param(False, id="False"),
    pytest.param([], id="list"),
    pytest.param({}, id="dict"),
    pytest.param({"value": 1}, id="object"),
    pytest.param("", id="empty"),
    pytest.param("abc", id="text"),
    pytest.param("1,5", id="comma"),
    pytest.param("0x10", id="hex"),
    pytest.param(1e300, id="huge-float"),
    pytest.param(10**40, id="huge-int"),
    pytest.param("1e40", id="huge-string"),
    pytest.param("9" * 65, id="over-long-string"),
    pytest.param("0.0000000000000000001", id="19-decimals"),
    pytest.param(5e-324, id="tiny-float"),
]


# -- ORDERS --


def test_good_limit_order_becomes_an_order_of_decimals() -> None:
    got = validate_order(GOOD_ORDER)
    assert got == Order("ord-1", "acct-1", "BTC", Side.BUY, Decimal("1.5"), OrderType.LIMIT,
                        Decimal("100.25"))


def test_good_market_order_has_no_price() -> None:
    got = validate_order(GOOD_MARKET)
    assert got.order_type is OrderType.MARKET and got.price is None
    assert got.quantity == Decimal(2) and got.side is Side.SELL


@pytest.mark.parametrize("price", [0, "0", 0.0, None])
def test_market_order_with_zero_or_null_price_is_accepted(price: Any) -> None:
    assert validate_order(with_(GOOD_MARKET, price=price)).price is None


def test_optional_order_fields_are_parsed() -> None:
    got = validate_order(with_(GOOD_ORDER, strategy_id="alpha", timestamp=1_700_000_000.5,
                               reduce_only=True))
    assert got.strategy_id == "alpha"
    assert got.timestamp == 1_700_000_000.5
    assert got.reduce_only is True


def test_float_numbers_keep_their_decimal_reading() -> None:
    got = validate_order(with_(GOOD_ORDER, quantity=0.1, price=0.3))
    assert got.quantity == Decimal("0.1") and got.price == Decimal("0.3")


@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_bad_quantity_is_refused_naming_quantity(value: Any) -> None:
    assert refused(lambda: validate_order(with_(GOOD_ORDER, quantity=value))).field == "quantity"


@pytest.mark.parametrize("value", [0, "0", "-0", -1, "-1.5", 0.0, -0.0])
def test_zero_or_negative_quantity_is_refused(value: Any) -> None:
    assert refused(lambda: validate_order(with_(GOOD_ORDER, quantity=value))).field == "quantity"


@pytest.mark.parametrize("value", BAD_NUMBERS + [-1, "-0.01"])
def test_bad_limit_price_is_refused_naming_price(value: Any) -> None:
    assert refused(lambda: validate_order(with_(GOOD_ORDER, price=value))).field == "price"


def test_quantity_at_the_bound_is_accepted_and_beyond_refused() -> None:
    assert validate_order(with_(GOOD_ORDER, quantity="1e12")).quantity == Decimal("1e12")
    err = refused(lambda: validate_order(with_(GOOD_ORDER, quantity="1000000000000.0001")))
    assert err.field == "quantity"


def test_limit_order_without_a_price_is_refused() -> None:
    assert refused(lambda: validate_order(without(GOOD_ORDER, "price"))).field == "price"
    assert refused(lambda: validate_order(with_(GOOD_ORDER, price=0))).field == "price"


def test_market_order_with_a_price_is_refused() -> None:
    assert refused(lambda: validate_order(with_(GOOD_MARKET, price=100))).field == "price"


@pytest.mark.parametrize("field", ["order_id", "account_id", "symbol", "side", "quantity",
                                   "order_type"])
def test_missing_required_order_field_is_refused(field: str) -> None:
    assert refused(lambda: validate_order(without(GOOD_ORDER, field))).field == field
    assert refused(lambda: validate_order(with_(GOOD_ORDER, **{field: None}))).field == field


@pytest.mark.parametrize("field", ["order_id", "account_id", "symbol", "strategy_id"])
@pytest.mark.parametrize("value", [
    pytest.param(123, id="int"), pytest.param(1.5, id="float"), pytest.param(True, id="bool"),
    pytest.param(["a"], id="list"), pytest.param({"a": 1}, id="dict"),
    pytest.param("", id="empty"), pytest.param("a\x00b", id="nul"),
    pytest.param("a\nb", id="newline"), pytest.param("\x1b[31m", id="escape"),
    pytest.param(" lead", id="leading-space"), pytest.param("trail ", id="trailing-space"),
    pytest.param("\u200b", id="zero-width-space"), pytest.param("\ud800", id="lone-surrogate"),
])
def test_bad_identifier_is_refused_naming_its_field(field: str, value: Any) -> None:
    assert refused(lambda: validate_order(with_(GOOD_ORDER, **{field: value}))).field == field


@pytest.mark.parametrize("field, limit", [("order_id", 128), ("account_id", 128),
                                          ("strategy_id", 128), ("symbol", 32)])
def test_identifier_at_its_length_limit_is_accepted_and_one_longer_refused(
    field: str, limit: int,
) -> None:
    assert getattr(validate_order(with_(GOOD_ORDER, **{field: "x" * limit})), field) == "x" * limit
    err = refused(lambda: validate_order(with_(GOOD_ORDER, **{field: "x" * (limit + 1)})))
    assert err.field == field


@pytest.mark.parametrize("value", ["账户-7", "Ärger", "ποσό", "🚀moon", "a b"])
def test_printable_unicode_identifiers_are_accepted(value: str) -> None:
    got = validate_order(with_(GOOD_ORDER, order_id=value, account_id=value))
    assert got.order_id == value and got.account_id == value


@pytest.mark.parametrize("field, value", [
    ("side", "buy"), ("side", "HOLD"), ("side", 1), ("side", True),
    ("order_type", "STOP"), ("order_type", "market"), ("order_type", ["LIMIT"]),
])
def test_unknown_enum_value_is_refused(field: str, value: Any) -> None:
    assert refused(lambda: validate_order(with_(GOOD_ORDER, **{field: value}))).field == field


@pytest.mark.parametrize("value", ["true", 1, 0, "yes", [True]])
def test_reduce_only_must_be_a_boolean(value: Any) -> None:
    err = refused(lambda: validate_order(with_(GOOD_ORDER, reduce_only=value)))
    assert err.field == "reduce_only"


@pytest.mark.parametrize("value", [True, "1700000000", -1, float("nan"), float("inf"),
                                   4e10, [1]])
def test_bad_timestamp_is_refused(value: Any) -> None:
    assert refused(lambda: validate_order(with_(GOOD_ORDER, timestamp=value))).field == "timestamp"


@pytest.mark.parametrize("key", ["reduceOnly", "qty", "Price", "x" * 200])
def test_unknown_order_field_is_refused_by_name(key: str) -> None:
    err = refused(lambda: validate_order(with_(GOOD_ORDER, **{key: True})))
    assert err.field == key[:64]
    assert err.message == "unknown field"


@pytest.mark.parametrize("raw", [None, [], "order", 42, ["order_id"], 1.5])
def test_order_that_is_not_an_object_is_refused(raw: Any) -> None:
    assert refused(lambda: validate_order(raw)).field == "order"


def test_non_string_field_name_is_refused() -> None:
    assert refused(lambda: validate_order({**GOOD_ORDER, 1: "x"})).field == "<key>"


@pytest.mark.parametrize("field, value", [("quantity", "1e1000000"), ("price", "-1e1000000")])
def test_number_string_with_an_enormous_exponent_is_refused(field: str, value: str) -> None:
    assert refused(lambda: validate_order(with_(GOOD_ORDER, **{field: value}))).field == field


def test_integer_timestamp_too_large_for_a_float_is_refused() -> None:
    assert refused(lambda: validate_order(with_(GOOD_ORDER, timestamp=10**400))).field == "timestamp"


@pytest.mark.parametrize("call", [
    pytest.param(lambda: validate_prices({"BTC": "1e1000000"}, 1.0), id="mark"),
    pytest.param(lambda: validate_prices({"BTC": 1}, 10**400), id="ts"),
    pytest.param(lambda: validate_account({"account_id": "a", "balance": "-1e1000000"}),
                 id="balance"),
])
def test_overflowing_numbers_are_refused_by_every_validator(call: Callable[[], Any]) -> None:
    refused(call)


# -- ANY INPUT AT ALL --

json_leaves = (st.none() | st.booleans() | st.integers()
               | st.floats(allow_nan=True, allow_infinity=True)
               | st.text(max_size=20)
               | st.sampled_from(["NaN", "Infinity", "-Infinity", "sNaN", "1e12", "1e-19",
                                  "BUY", "SELL", "MARKET", "LIMIT", "", " 1 ", "0", "-0"]))
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
good_values = {
    "order_id": st.sampled_from(["o-1", "订单"]),
    "account_id": st.just("acct-1"),
    "symbol": st.sampled_from(["BTC", "ETH-USD"]),
    "side": st.sampled_from(["BUY", "SELL"]),
    "quantity": st.sampled_from([1, "0.5", 2.5, "1e3"]),
    "price": st.sampled_from([None, 0, 100, "101.5"]),
    "order_type": st.sampled_from(["MARKET", "LIMIT"]),
    "strategy_id": st.sampled_from([None, "alpha"]),
    "timestamp": st.sampled_from([None, 1_700_000_000, 1.7e9]),
    "reduce_only": st.booleans(),
}
order_shaped = st.fixed_dictionaries({}, optional={
    name: st.one_of(good_values[name], good_values[name], json_values)
    for name in sorted(ORDER_FIELDS)
}) | st.builds(lambda d, extra: {**d, **extra},
               st.fixed_dictionaries({k: good_values[k] for k in sorted(ORDER_FIELDS)}),
               st.dictionaries(st.text(max_size=12), json_values, max_size=2))


@settings(max_examples=500, deadline=None)
@given(st.one_of(json_values, order_shaped))
def test_any_json_value_is_an_order_or_invalid_input(raw: Any) -> None:
    try:
        got = validate_order(raw)
    except InvalidInput as exc:
        # then: the refusal names a field of the order, the order itself, or a given key
        given_keys = {k[:64] for k in raw if isinstance(k, str)} if isinstance(raw, dict) else set()
        assert exc.field in ORDER_FIELDS | {"order", "<key>"} | given_keys
        return
    # then: what passes is a well-formed order
    assert isinstance(got, Order)
    assert got.quantity > 0 and got.quantity.is_finite()
    assert (got.price is None) == (got.order_type is OrderType.MARKET)
    assert got.price is None or (got.price > 0 and got.price.is_finite())


def test_the_any_input_strategy_reaches_accepted_orders() -> None:
    # guards the property above against a strategy that only ever produces garbage
    found = []

    @settings(max_examples=200, deadline=None, database=None)
    @given(order_shaped)
    def collect(raw: Any) -> None:
        try:
            found.append(validate_order(raw))
        except InvalidInput:
            pass

    collect()
    assert found


# -- ACCOUNTS --


def test_minimal_account_is_accepted() -> None:
    assert validate_account({"account_id": "a", "balance": "1000.50"}) == {
        "account_id": "a", "balance": Decimal("1000.50")}


def test_full_account_is_accepted_and_the_loader_type_field_ignored() -> None:
    got = validate_account({"type": "account", "account_id": "a", "balance": -5,
                            "status": "REDUCING", "peak_equity": 10, "daily_start_equity": "9",
                            "max_leverage": 20})
    assert got == {"account_id": "a", "balance": Decimal(-5), "status": TradingState.REDUCING,
                   "peak_equity": Decimal(10), "daily_start_equity": Decimal(9),
                   "max_leverage": Decimal(20)}


@pytest.mark.parametrize("raw, field", [
    ({"balance": 1}, "account_id"),
    ({"account_id": "a"}, "balance"),
    ({"account_id": "a", "balance": float("nan")}, "balance"),
    ({"account_id": "a", "balance": "Infinity"}, "balance"),
    ({"account_id": "a", "balance": True}, "balance"),
    ({"account_id": "a", "balance": "1e19"}, "balance"),
    ({"account_id": "a", "balance": 1, "status": "PAUSED"}, "status"),
    ({"account_id": "a", "balance": 1, "status": "active"}, "status"),
    ({"account_id": "a", "balance": 1, "peak_equity": -1}, "peak_equity"),
    ({"account_id": "a", "balance": 1, "daily_start_equity": "-0.01"}, "daily_start_equity"),
    ({"account_id": "a", "balance": 1, "max_leverage": 0}, "max_leverage"),
    ({"account_id": "a", "balance": 1, "max_leverage": 10_001}, "max_leverage"),
    ({"account_id": "a", "balance": 1, "credit": 5}, "credit"),
    ({"account_id": 7, "balance": 1}, "account_id"),
])
def test_bad_account_is_refused_naming_the_field(raw: dict, field: str) -> None:
    assert refused(lambda: validate_account(raw)).field == field


# -- FILLS --


def test_good_fill_is_accepted() -> None:
    assert validate_fill(GOOD_FILL) == Fill("f-1", "acct-1", "BTC", Side.BUY, Decimal(1),
                                            Decimal(100))


@pytest.mark.parametrize("field, value", [
    ("quantity", 0), ("quantity", -1), ("quantity", "NaN"), ("quantity", True),
    ("price", 0), ("price", -100), ("price", float("inf")), ("price", "Infinity"),
    ("side", "sell"), ("fill_id", ""), ("fill_id", "x" * 129), ("symbol", "x" * 33),
    ("fillId", "f"),
])
def test_bad_fill_is_refused_naming_the_field(field: str, value: Any) -> None:
    assert refused(lambda: validate_fill(with_(GOOD_FILL, **{field: value}))).field == field


@pytest.mark.parametrize("field", sorted(GOOD_FILL))
def test_fill_without_a_required_field_is_refused(field: str) -> None:
    assert refused(lambda: validate_fill(without(GOOD_FILL, field))).field == field


# -- PRICES --


def test_good_prices_are_accepted() -> None:
    got = validate_prices({"BTC": 100.5, "ETH": "2000", "币": 3}, 1_700_000_000)
    assert got == ({"BTC": Decimal("100.5"), "ETH": Decimal(2000), "币": Decimal(3)},
                   1_700_000_000.0)


@pytest.mark.parametrize("mark", [float("nan"), "NaN", float("inf"), "Infinity", 0, -1, True,
                                  None, "abc", 1e13])
def test_bad_mark_is_refused_naming_its_symbol(mark: Any) -> None:
    assert refused(lambda: validate_prices({"BTC": mark}, 1.0)).field == "prices.BTC"


@pytest.mark.parametrize("ts", [None, "now", float("nan"), float("inf"), -1, True, 4e10])
def test_bad_price_timestamp_is_refused(ts: Any) -> None:
    assert refused(lambda: validate_prices({"BTC": 1}, ts)).field == "ts"


@pytest.mark.parametrize("symbol", ["", "x" * 33, "a\tb", " BTC"])
def test_bad_price_symbol_is_refused(symbol: str) -> None:
    assert refused(lambda: validate_prices({symbol: 1}, 1.0)).field == "symbol"


def test_prices_that_are_not_an_object_or_too_many_are_refused() -> None:
    assert refused(lambda: validate_prices([("BTC", 1)], 1.0)).field == "prices"
    too_many = {f"S{i}": 1 for i in range(10_001)}
    assert refused(lambda: validate_prices(too_many, 1.0)).field == "prices"


# -- SYMBOLS --


def test_symbol_without_rates_takes_the_defaults() -> None:
    got = validate_symbol({"symbol": "BTC"}, Decimal("0.10"), Decimal("0.05"))
    assert got == SymbolSpec("BTC", Decimal("0.10"), Decimal("0.05"), None, None)


def test_full_symbol_is_accepted() -> None:
    got = validate_symbol({"type": "symbol", "symbol": "BTC", "imr": "0.2", "mmr": 0.1,
                           "price_collar": "0.05", "max_order_notional": None},
                          Decimal("0.10"), Decimal("0.05"))
    assert got == SymbolSpec("BTC", Decimal("0.2"), Decimal("0.1"), Decimal("0.05"), None)


@pytest.mark.parametrize("changes, field", [
    ({"imr": 0}, "imr"), ({"imr": "1.01"}, "imr"), ({"imr": "NaN"}, "imr"),
    ({"mmr": -0.01}, "mmr"), ({"imr": "0.1", "mmr": "0.2"}, "mmr"),
    ({"price_collar": 0}, "price_collar"), ({"price_collar": "Infinity"}, "price_collar"),
    ({"max_order_notional": 0}, "max_order_notional"),
    ({"max_order_notional": -5}, "max_order_notional"),
    ({"symbol": ""}, "symbol"), ({"symbol": None}, "symbol"), ({"tick": 1}, "tick"),
])
def test_bad_symbol_is_refused_naming_the_field(changes: dict, field: str) -> None:
    raw = with_({"symbol": "BTC"}, **changes)
    err = refused(lambda: validate_symbol(raw, Decimal("0.10"), Decimal("0.05")))
    assert err.field == field


def test_default_mmr_above_a_given_imr_is_refused() -> None:
    err = refused(lambda: validate_symbol({"symbol": "X", "imr": "0.01"}, Decimal("0.10"),
                                          Decimal("0.05")))
    assert err.field == "mmr"


# -- POLICIES --


def test_good_policy_is_accepted_with_defaults() -> None:
    assert validate_policy(GOOD_POLICY) == Policy(
        "Max Account Leverage", PolicyType.HARD, "leverage", "less_than_or_equal",
        Decimal(10), "account", None, True, 0, 1)


def test_scoped_concentration_policy_is_accepted() -> None:
    got = validate_policy(with_(GOOD_POLICY, id=7, metric="concentration_BTC", scope="symbol",
                                scope_id="BTC", type="soft", enabled=False, priority=5,
                                version=3, operator="less_than", threshold="0.5"))
    assert (got.metric, got.scope, got.scope_id, got.type, got.enabled, got.priority,
            got.version) == ("concentration_BTC", "symbol", "BTC", PolicyType.SOFT, False, 5, 3)


@pytest.mark.parametrize("changes, field", [
    ({"metric": "sharpe"}, "metric"), ({"metric": "concentration_"}, "metric"),
    ({"metric": 1}, "metric"), ({"operator": "lt"}, "operator"),
    ({"operator": "not_equal"}, "operator"), ({"type": "warning"}, "type"),
    ({"type": "HARD"}, "type"), ({"scope": "desk"}, "scope"), ({"scope": None}, "scope"),
    ({"scope": "symbol"}, "scope_id"), ({"scope": "strategy"}, "scope_id"),
    ({"threshold": "NaN"}, "threshold"), ({"threshold": float("inf")}, "threshold"),
    ({"threshold": None}, "threshold"), ({"threshold": False}, "threshold"),
    ({"priority": True}, "priority"), ({"priority": 1.5}, "priority"),
    ({"priority": 10**10}, "priority"), ({"version": "2"}, "version"),
    ({"enabled": "yes"}, "enabled"), ({"name": ""}, "name"), ({"owner": "bob"}, "owner"),
])
def test_bad_policy_is_refused_naming_the_field(changes: dict, field: str) -> None:
    assert refused(lambda: validate_policy(with_(GOOD_POLICY, **changes))).field == field


def test_invalid_input_carries_field_and_message() -> None:
    err = refused(lambda: validate_order(with_(GOOD_ORDER, quantity=-1)))
    assert str(err) == f"quantity: {err.message}"
    assert isinstance(err, ValueError)
