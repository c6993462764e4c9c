"""Execution gateways (``RISK_GATEWAY``): ``paper`` fills at mark, ``http`` calls a venue.

``gateway_for(rt)`` gives the configured gateway of a runtime, built once per process
(the HTTP gateway keeps a connection pool).
"""

from __future__ import annotations

from risk_tasks.gateways.base import (
    Execution, ExecutionGateway, PermanentGatewayError, TransientGatewayError,
)
from risk_tasks.gateways.http import HttpGateway
from risk_tasks.gateways.paper import PaperGateway

_gateways: dict[int, ExecutionGateway] = {}


def make_gateway(rt) -> ExecutionGateway:  # noqa: ANN001 - risk_tasks.runtime.Runtime
    settings = rt.settings
    if settings.gateway == "http":
        return HttpGateway(rt.store, settings.gateway_url, settings.gateway_timeout_seconds)
    return PaperGateway(rt.store)


def gateway_for(rt) -> ExecutionGateway:  # noqa: ANN001
    found = _gateways.get(id(rt))
    if found is None or found.store is not rt.store:
        _gateways.clear()  # one runtime per process; a new one (after a fork) replaces it
        found = _gateways[id(rt)] = make_gateway(rt)
    return found


__all__ = ["Execution", "ExecutionGateway", "HttpGateway", "PaperGateway",
           "PermanentGatewayError", "TransientGatewayError", "gateway_for", "make_gateway"]
