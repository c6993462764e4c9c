"""risk_tasks.serialization: kombu's "json" served by orjson gives the values kombu's
own encoder and decoder give, for anything a message can carry."""

from __future__ import annotations

import dataclasses
import math
import uuid
from datetime import date, datetime, time, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.serialization import dumps as kombu_registry_dumps
from kombu.serialization import loads as kombu_registry_loads
from kombu.utils import json as kombu_json

from risk_tasks import serialization

scalars = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text()
           | st.decimals(allow_nan=False, allow_infinity=False)
           | st.datetimes(timezones=st.none() | st.just(timezone.utc)) | st.dates()
           | st.times() | st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=5),
                      max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(values)
def test_what_it_encodes_decodes_as_kombus_own_encoding_does(value):
    ours = serialization.dumps(value)
    theirs = kombu_json.dumps(value)
    assert kombu_json.loads(ours) == kombu_json.loads(theirs)
    assert serialization.loads(ours) == kombu_json.loads(theirs)
    assert serialization.loads(theirs) == kombu_json.loads(theirs)


@pytest.mark.parametrize("value", [
    {"big": 2 ** 70},  # beyond orjson's 64 bits
    {1: "a", 2.5: "b", None: "c", True: "d"},  # keys that are not strings
    [Decimal("1.10"), datetime(2026, 12, 1, 23, 0, 1, 5), date(2026, 12, 1),
     time(23, 0, 1), b"\x00\xff", "caf\u00e9"],
    {"__type__": "decimal", "__value__": "1.5"},  # a kombu envelope sent as data
])
def test_what_orjson_refuses_or_kombu_wraps_is_kombus(value):
    ours = serialization.dumps(value)
    assert serialization.loads(ours) == kombu_json.loads(kombu_json.dumps(value))


def test_text_orjson_refuses_is_read_by_kombu():
    assert math.isnan(serialization.loads('{"x": NaN}')["x"])
    assert serialization.loads(b"[123456789012345678901234567890]") == [
        123456789012345678901234567890]
    assert serialization.loads(memoryview(b'{"a": [1, 2]}')) == {"a": [1, 2]}
    assert serialization.loads(bytearray(b'"x"')) == "x"


def test_what_nobody_encodes_fails_as_with_kombu():
    @dataclasses.dataclass
    class Order:
        quantity: int

    for value in (object(), {"o": Order(1)}, {1, 2}):
        with pytest.raises(TypeError):
            kombu_json.dumps(value)
        with pytest.raises(TypeError):
            serialization.dumps(value)


def test_the_differences_it_documents():
    assert serialization.loads(serialization.dumps([uuid.UUID(int=1)])) == [
        "00000000-0000-0000-0000-000000000001"]
    assert serialization.loads(serialization.dumps([math.inf, math.nan])) == [None, None]


def test_registered_it_serves_kombus_json_name_and_content_type():
    serialization.register()
    content_type, encoding, payload = kombu_registry_dumps({"a": Decimal("1.5")}, "json")
    assert (content_type, encoding) == ("application/json", "utf-8")
    assert kombu_registry_loads(payload, content_type, encoding,
                                accept=["application/json"]) == {"a": Decimal("1.5")}
    assert kombu_json.loads(payload) == {"a": Decimal("1.5")}
