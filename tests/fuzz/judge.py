"""Run a fuzz case (in this process, or through a real worker) and judge the answer.

Every case must end in one of two clean ways: accepted (a valid value slipped
through, or the engine made an ordinary decision), or refused with an answer of the
task's documented shape whose message names the broken field. Anything else (an
exception out of the task, a malformed answer, a refusal naming nothing useful) is a
finding, returned as ``("BAD", why)``.
"""

from __future__ import annotations

import time
from typing import Any

from kombu.utils.json import dumps, loads

from tests.fuzz.cases import NOW, Case

CHECK_KEYS = {"approved", "violations", "rejection_reason", "post_trade_metrics",
              "processing_time_us"}


def as_message(case: Case) -> tuple[list, dict]:
    """The arguments as a worker receives them: through the JSON serializer."""
    args = [time.time() if a == NOW else a for a in case.args]
    return loads(dumps(args)), loads(dumps(case.kwargs))


def names_field(text: Any, names: tuple[str, ...]) -> bool:
    return not names or (isinstance(text, str) and any(n in text for n in names))


def judge(case: Case, result: Any) -> tuple[str, str]:
    """("accepted" | "refused" | "BAD", detail)."""
    task = case.task
    if task == "risk.check_order":
        return _check(result, case.names)
    if task == "risk.check_order_batch":
        sent = case.args[0]
        if sent == [] and result == []:
            return "accepted", "no orders, no answers"
        if not isinstance(result, list) or not result:
            return "BAD", f"batch answer is not a non-empty list: {repr(result)[:200]}"
        if isinstance(sent, list) and sent and len(result) != len(sent):
            return "BAD", f"{len(result)} answers for {len(sent)} orders"
        verdicts = [_check(r, ()) for r in result]
        bad = [v for v in verdicts if v[0] == "BAD"]
        return bad[0] if bad else ("refused" if all(v[0] == "refused" for v in verdicts)
                                   else "accepted", "")
    if task in ("risk.upsert_account", "risk.apply_fill", "risk.ingest_prices"):
        if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
            return "BAD", f"no ok flag: {repr(result)[:200]}"
        if result["ok"]:
            return "accepted", ""
        text = f"{result.get('field')} {result.get('error')}"
        if not isinstance(result.get("error"), str):
            return "BAD", f"refusal without an error message: {result!r:.200}"
        if result.get("code") in ("unknown_account", "unknown_symbol"):
            return "refused", result["code"]
        return ("refused", result["error"]) if names_field(text, case.names) else \
            ("BAD", f"refusal does not name {case.names}: {text[:200]}")
    if task == "risk.get_risk_metrics":
        if not isinstance(result, dict):
            return "BAD", f"not a dict: {result!r:.200}"
        if "error" in result:
            if result["error"] == "unknown_account":
                return "refused", "unknown_account"
            return ("refused", result["message"]) if names_field(result.get("message"),
                                                                 case.names) \
                else ("BAD", f"refusal does not name account_id: {result!r:.200}")
        return ("accepted", "") if "equity" in result else ("BAD", f"{result!r:.200}")
    if task in ("risk.trigger_emergency_stop", "risk.re_enable_trading"):
        if not isinstance(result, dict) or not {"success", "message", "status"} <= set(result):
            return "BAD", f"not a control result: {repr(result)[:200]}"
        if result["success"]:
            if task == "risk.trigger_emergency_stop":
                return "BAD", f"a stop with a bad argument succeeded: {case.kwargs!r:.200}"
            return "accepted", result["message"]
        return ("refused", result["message"]) if names_field(result["message"], case.names) \
            else ("BAD", f"refusal does not name {case.names}: {result['message'][:200]}")
    if task == "risk.stress_test":
        if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
            return "BAD", f"no ok flag: {repr(result)[:200]}"
        if result["ok"]:
            return "accepted", ""
        return ("refused", result["error"]) if isinstance(result.get("error"), str) \
            else ("BAD", f"{result!r:.200}")
    if task == "load":
        return _load(result, case.names)
    raise ValueError(f"no judge for {task}")


def _check(result: Any, names: tuple[str, ...]) -> tuple[str, str]:
    if not isinstance(result, dict) or not CHECK_KEYS <= set(result):
        return "BAD", f"not a decision: {repr(result)[:200]}"
    if result["approved"]:
        return "accepted", ""
    if result["rejection_reason"] != "invalid_request":
        return "accepted", result["rejection_reason"]  # an ordinary rejection by the engine
    message = result.get("message")
    if not isinstance(message, str) or not message:
        return "BAD", "invalid_request without a message"
    return ("refused", message) if names_field(message, names) else \
        ("BAD", f"invalid_request does not name {names}: {message[:200]}")


def _load(report: Any, names: tuple[str, ...]) -> tuple[str, str]:
    errors = report["errors"]
    if not errors:
        return "accepted", ""
    [error] = errors
    text = f"{error['field']} {error['error']}"
    if error["field"] in ("unknown_account", "unknown_symbol"):
        return "refused", text
    return ("refused", text) if names_field(text, names) else \
        ("BAD", f"load error does not name {names}: {text[:200]}")


# -- IN THIS PROCESS --

def run_in_process(case: Case, rt: Any) -> Any:  # noqa: ANN401
    """Call the task's function here (as a worker would, after JSON), or the loader."""
    args, kwargs = as_message(case)
    if case.task == "load":
        from risk_tasks.loader import Loader

        line = args[0] if isinstance(args[0], str) else dumps(args[0])
        return Loader(rt.store, rt.sessions).load([line]).as_dict()
    return _tasks()[case.task](*args, **kwargs)


def _tasks() -> Any:  # noqa: ANN401 - the app's task registry, with every task module imported
    from risk_tasks.app import app

    app.loader.import_default_modules()
    return app.tasks


def run_case(case: Case, rt: Any) -> tuple[str, str]:
    try:
        result = run_in_process(case, rt)
    except Exception as exc:  # noqa: BLE001 - the finding itself
        return "BAD", f"raised {exc.__class__.__name__}: {str(exc)[:200]}"
    return judge(case, result)


def applied_fill(case: Case, result: Any) -> tuple[str, str, Any] | None:
    """``(account_id, symbol, signed quantity)`` of a fill the case applied, if any
    (through ``risk.apply_fill`` or a ``riskctl load`` fill line)."""
    from risk_tasks.engine.validation import InvalidInput, validate_fill

    if not isinstance(result, dict):
        return None
    if case.task == "risk.apply_fill":
        if not result.get("ok") or result.get("duplicate"):
            return None
    elif case.task == "load":
        if result.get("fills") != 1:
            return None
    else:
        return None
    args, _ = as_message(case)
    raw = args[0]
    if isinstance(raw, str):
        try:
            raw = loads(raw)
        except ValueError:
            return None
    try:
        fill = validate_fill(raw)
    except InvalidInput:
        return None
    return fill.account_id, fill.symbol, fill.quantity if fill.side.value == "BUY" \
        else -fill.quantity


def record(case: Case, result: Any, verdicts: Any, findings: list[str],  # noqa: ANN401
           fills: list) -> None:
    """Judge one case's result: count its verdict, keep a finding when it is BAD, and
    remember a fill it applied (for the state checks at the end)."""
    verdict, detail = judge(case, result)
    verdicts[verdict] += 1
    if verdict == "BAD":
        findings.append(f"{case.describe()}: {detail}")
    fill = applied_fill(case, result)
    if fill is not None:
        fills.append(fill)


def arrange_world(world: Any) -> list:  # noqa: ANN401 - tests.integration.helpers.World
    """What every fuzz run starts from: BTC at 100, the default policies, account FA
    (long 2 BTC) and FB; returns the fills applied (account, symbol, signed quantity)."""
    from decimal import Decimal

    world.default_policies()
    world.symbol("BTC", collar="0.5", max_notional=1_000_000)
    world.prices({"BTC": 100})
    world.account("FA", 100_000)
    world.account("FB", 50_000)
    world.fill("FA", "BTC", "BUY", 2, 100)
    return [("FA", "BTC", Decimal(2))]
