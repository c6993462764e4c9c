"""Which Redis clients may store each other's results in a script (redis_server)."""

import redis

from risk_tasks.result_backend import redis_server


def server(url: str) -> str:
    return redis_server(redis.Redis.from_url(url))


def test_the_same_server_and_credentials_match_whatever_the_database():
    assert server("redis://127.0.0.1:6379/1") == server("redis://127.0.0.1:6379/2")
    assert server("unix:///run/redis.sock?db=1") == server("unix:///run/redis.sock?db=2")
    assert server("redis://u:pw@127.0.0.1:6379/1") == server("redis://u:pw@127.0.0.1:6379/2")


def test_another_server_or_other_credentials_do_not():
    base = server("redis://127.0.0.1:6379/1")
    assert base != server("redis://127.0.0.1:6380/1")
    assert base != server("redis://10.0.0.2:6379/1")
    assert base != server("unix:///run/redis.sock?db=1")
    assert server("redis://u:pw@127.0.0.1:6379/1") != server("redis://u:secret@127.0.0.1:6379/1")
    assert server("redis://u:pw@127.0.0.1:6379/1") != server("redis://v:pw@127.0.0.1:6379/1")


def test_the_credentials_are_not_kept_in_the_digest():
    digest = server("redis://u:s3cret@127.0.0.1:6379/1")
    assert "s3cret" not in digest and len(digest) == 64
