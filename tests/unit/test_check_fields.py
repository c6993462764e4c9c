"""check_read.lua returns the account fields codec.CHECK_FIELDS names, in that order."""

import re
from importlib import resources

from risk_tasks.state.codec import CHECK_FIELDS, check_fields


def test_the_read_script_asks_for_the_fields_the_decoder_names():
    script = resources.files("risk_tasks.state").joinpath("lua/check_read.lua").read_text()
    call = re.search(r"redis\.call\('HMGET', KEYS\[3\],([^)]*)\)", script)
    assert call is not None
    asked = tuple(name.encode() for name in re.findall(r"'([a-z_]+)'", call.group(1)))
    assert asked == CHECK_FIELDS


def test_unset_fields_are_left_out():
    values = [b"100", b"ACTIVE", None, None, b"", b"3", b"17"]
    assert check_fields(values) == {b"balance": b"100", b"status": b"ACTIVE",
                                    b"max_leverage": b"", b"shard": b"3", b"slot": b"17"}
