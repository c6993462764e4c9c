"""The HTTP gateway's protocol and error mapping, against the loopback stub."""

from __future__ import annotations

import socket
from decimal import Decimal

import pytest

from risk_tasks.engine.model import Side
from risk_tasks.failures import PERMANENT_KIND, TRANSIENT_KIND, classify
from risk_tasks.gateways.base import PermanentGatewayError, TransientGatewayError
from risk_tasks.gateways.http import HttpGateway
from tests.support.gateway_stub import GatewayStub


@pytest.fixture()
def stub():  # noqa: ANN201
    server = GatewayStub({"BTC": "50000"}).start()
    yield server
    server.stop()


@pytest.fixture()
def gateway(stub: GatewayStub) -> HttpGateway:
    return HttpGateway(store=None, base_url=stub.url + "/", timeout=2.0)  # type: ignore[arg-type]


def test_close_executes_once_per_request_id(stub: GatewayStub, gateway: HttpGateway) -> None:
    # when the same request is sent twice
    first = gateway._execute("A", "BTC", Side.SELL, Decimal("2"), "liq:A:1:BTC:1")
    second = gateway._execute("A", "BTC", Side.SELL, Decimal("2"), "liq:A:1:BTC:1")
    # then the venue executed it once and answered the first execution both times
    assert first == second
    assert (first.symbol, first.side, first.quantity, first.price) == \
        ("BTC", Side.SELL, Decimal("2"), Decimal("50000"))
    assert len(stub.orders("A")) == 1


def test_lookup_finds_an_execution_or_none(stub: GatewayStub, gateway: HttpGateway) -> None:
    assert gateway.lookup("never-sent", "A") is None
    gateway._execute("A", "BTC", Side.BUY, Decimal("1"), "r/1 x")
    found = gateway.lookup("r/1 x", "A")
    assert found is not None and found.quantity == Decimal("1")


def test_cancel_all_returns_the_canceled_count(stub: GatewayStub, gateway: HttpGateway) -> None:
    stub.open_orders["A 1"] = 3
    assert gateway.cancel_all_orders("A 1", "liq:x:cancel") == 3
    assert gateway.cancel_all_orders("A 1", "liq:x:cancel") == 0


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_server_errors_and_throttling_are_transient(stub: GatewayStub, gateway: HttpGateway,
                                                     status: int) -> None:
    stub.fail_next(1, status)
    with pytest.raises(TransientGatewayError) as caught:
        gateway._execute("A", "BTC", Side.SELL, Decimal("1"), "r1")
    assert classify(caught.value) == TRANSIENT_KIND
    # and the next call goes through
    assert gateway._execute("A", "BTC", Side.SELL, Decimal("1"), "r1").quantity == 1


@pytest.mark.parametrize("status", [400, 401, 403, 409, 422])
def test_client_errors_are_permanent(stub: GatewayStub, gateway: HttpGateway, status: int) -> None:
    stub.fail_next(1, status)
    with pytest.raises(PermanentGatewayError) as caught:
        gateway.cancel_all_orders("A", "c1")
    assert classify(caught.value) == PERMANENT_KIND


def test_unknown_symbol_at_the_venue_is_permanent(gateway: HttpGateway) -> None:
    with pytest.raises(PermanentGatewayError, match="HTTP 422"):
        gateway._execute("A", "NOPE", Side.SELL, Decimal("1"), "r2")


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gateway = HttpGateway(store=None, base_url=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
                          timeout=1.0)
    with pytest.raises(TransientGatewayError):
        gateway.cancel_all_orders("A", "c1")


def test_a_slow_venue_times_out_as_transient(stub: GatewayStub) -> None:
    stub.delay = 1.0
    gateway = HttpGateway(store=None, base_url=stub.url, timeout=0.2)  # type: ignore[arg-type]
    with pytest.raises(TransientGatewayError, match="Timeout"):
        gateway._execute("A", "BTC", Side.SELL, Decimal("1"), "slow")


def test_a_reply_of_the_wrong_shape_is_permanent(gateway: HttpGateway) -> None:
    with pytest.raises(PermanentGatewayError, match="unusable reply"):
        gateway._execution({"status": "rejected"}, "r", "A")
    with pytest.raises(PermanentGatewayError, match="unusable reply"):
        gateway._execution(["not", "a", "dict"], "r", "A")
    with pytest.raises(PermanentGatewayError, match="unusable reply"):
        gateway._execution({"status": "filled", "client_order_id": "r", "symbol": "BTC",
                            "side": "SELL", "quantity": "abc", "price": "1"}, "r", "A")


def test_an_execution_that_does_not_match_the_request_is_refused(stub: GatewayStub,
                                                                 gateway: HttpGateway) -> None:
    # given the venue once executed this id as a BUY
    gateway._execute("A", "BTC", Side.BUY, Decimal("1"), "r3")
    # when a close reuses the id for a SELL, the gateway refuses to apply it
    with pytest.raises(PermanentGatewayError, match="executed"):
        gateway.close_position("A", "BTC", Side.SELL, Decimal("1"), "r3", "liquidation", "e")
