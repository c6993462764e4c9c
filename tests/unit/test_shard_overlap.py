"""``shard_overlap``: how many shards of a tick ran at once, from their wall-clock spans."""

from risk_tasks.monitor.ticks import shard_overlap


def test_shards_one_after_another_overlap_once():
    assert shard_overlap([{"span": [0.0, 1.0]}, {"span": [1.0, 2.0]}, {"span": [2.0, 3.0]}]) == 1.0


def test_two_at_every_moment_overlap_twice():
    spans = [[0.0, 1.0], [0.0, 1.0], [1.0, 2.0], [1.0, 2.0]]
    assert shard_overlap([{"span": s} for s in spans]) == 2.0


def test_gaps_between_shards_count_against_the_overlap():
    # two processes, each with a 1 s gap between its two shards
    spans = [[0.0, 1.0], [0.0, 1.0], [2.0, 3.0], [2.0, 3.0]]
    assert shard_overlap([{"span": s} for s in spans]) == round(4 / 3, 2)


def test_without_spans_there_is_no_figure():
    assert shard_overlap([]) is None
    assert shard_overlap([{"failed": True}, {"span": "bad"}]) is None
    assert shard_overlap([{"span": [1.0, 1.0]}]) is None
