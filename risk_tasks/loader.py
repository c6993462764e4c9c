"""``riskctl load FILE.jsonl``: bulk-load a snapshot of symbols, policies, accounts,
fills and prices.

One JSON object per line with a ``type`` and the fields of DESIGN.md beside it:

    {"type": "symbol", "symbol": "BTC", "imr": 0.1, "mmr": 0.05, "price_collar": 0.05, "max_order_notional": 1000000}
    {"type": "policy", "name": "Max Account Leverage", "policy_type": "hard", "metric": "leverage", "operator": "less_than_or_equal", "threshold": 10}
    {"type": "account", "account_id": "A1", "balance": 100000}
    {"type": "fill", "fill_id": "F1", "account_id": "A1", "symbol": "BTC", "side": "BUY", "quantity": 1, "price": 50000}
    {"type": "prices", "prices": {"BTC": 50100}, "ts": 1795400000.0}

A policy's own type (hard|soft|emergency) goes in ``policy_type`` because ``type`` names
the line. Symbols and policies are written to the database and published to Redis;
accounts and fills go through the state store (new accounts in pipelined bulk, with the
same arithmetic and journal records as ``risk.upsert_account`` / ``risk.apply_fill``).
A bad line is reported with its number and field and skipped; the rest still loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterable

import orjson

from risk_tasks.engine.model import Fill, Policy, SymbolSpec
from risk_tasks.engine.validation import (
    InvalidInput, validate_account, validate_fill, validate_policy, validate_prices,
    validate_symbol,
)
from risk_tasks.state.store import StateError, StateStore

MAX_LINE = 1 << 20


@dataclass
class LoadReport:
    lines: int = 0
    symbols: int = 0
    policies: int = 0
    accounts_created: int = 0
    accounts_updated: int = 0
    fills: int = 0
    price_ticks: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "symbols": self.symbols, "policies": self.policies,
                "accounts_created": self.accounts_created,
                "accounts_updated": self.accounts_updated, "fills": self.fills,
                "price_ticks": self.price_ticks, "errors": self.errors[:1000],
                "error_count": len(self.errors)}


class Loader:
    def __init__(self, store: StateStore, sessions: Any | None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.sessions = sessions
        self.progress = progress or (lambda n: None)
        settings = store.settings
        self.default_imr = Decimal(settings.default_imr)
        self.default_mmr = Decimal(settings.default_mmr)
        self.report = LoadReport()
        self._accounts: dict[str, dict[str, Any]] = {}
        self._fills: dict[str, list[Fill]] = {}
        self._late_fills: list[tuple[int, Fill]] = []
        self._policies: list[Policy] = []

    def load(self, lines: Iterable[str | bytes]) -> LoadReport:
        for number, line in enumerate(lines, start=1):
            self.report.lines = number
            self.progress(number)
            if isinstance(line, bytes):
                line = line.decode(errors="replace")
            if not line.strip():
                continue
            try:
                self._line(number, line)
            except InvalidInput as exc:
                self._error(number, exc.field, exc.message)
            except StateError as exc:
                self._error(number, exc.code, exc.message)
        self._flush()
        return self.report

    def _error(self, number: int, field_name: str, message: str) -> None:
        self.report.errors.append({"line": number, "field": field_name, "error": message})

    def _line(self, number: int, line: str) -> None:
        if len(line) > MAX_LINE:
            raise InvalidInput("line", f"longer than {MAX_LINE} bytes")
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput("line", f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidInput("line", "must be a JSON object")
        kind = raw.get("type")
        if kind == "symbol":
            spec = validate_symbol(raw, self.default_imr, self.default_mmr)
            self._save_symbols([spec])
            self.report.symbols += 1
        elif kind == "policy":
            fields = {k: v for k, v in raw.items() if k not in ("type", "policy_type")}
            if "policy_type" in raw:
                fields["type"] = raw["policy_type"]
            try:
                policy = validate_policy(fields)
            except InvalidInput as exc:
                if exc.field != "type":
                    raise
                # The line's own "type" is "policy": name the field the line really has.
                raise InvalidInput("policy_type", exc.message) from None
            self._policies.append(policy)
            self.report.policies += 1
        elif kind == "account":
            parsed = validate_account(raw)
            account_id = parsed["account_id"]
            if account_id in self._accounts:
                self._accounts[account_id].update(parsed)
            else:
                self._accounts[account_id] = parsed
        elif kind == "fill":
            fill = validate_fill(raw)
            if fill.symbol not in self.store.current_config().specs:
                raise InvalidInput("symbol", f"unknown symbol {fill.symbol}")
            if fill.account_id in self._accounts:
                self._fills.setdefault(fill.account_id, []).append(fill)
            else:
                self._late_fills.append((number, fill))
        elif kind == "prices":
            prices, ts = validate_prices(raw.get("prices"), raw.get("ts"))
            self.store.ingest_prices(prices, ts)
            self.report.price_ticks += 1
        else:
            raise InvalidInput("type", "must be symbol, policy, account, fill or prices")

    def _save_symbols(self, specs: list[SymbolSpec]) -> None:
        if self.sessions is not None:
            from risk_tasks.policy_store import save_symbols

            with self.sessions() as session, session.begin():
                save_symbols(session, specs)
        self.store.put_symbols(specs)

    def _flush(self) -> None:
        if self._policies:
            if self.sessions is not None:
                from risk_tasks.policy_store import publish_policies, save_policy

                with self.sessions() as session, session.begin():
                    for policy in self._policies:
                        save_policy(session, policy)
                publish_policies(self.sessions, self.store)
            else:
                self.store.put_policies(self._policies)
        if self._accounts:
            counts = self.store.create_accounts(
                (parsed, self._fills.get(account_id, []))
                for account_id, parsed in self._accounts.items())
            self.report.accounts_created += counts["created"]
            self.report.accounts_updated += counts["existing"]
            self.report.fills += counts["fills"]
        for number, fill in self._late_fills:
            try:
                if not self.store.apply_fill(fill).get("duplicate"):
                    self.report.fills += 1
            except StateError as exc:
                self._error(number, exc.code, exc.message)
