"""The 1-second monitor: shard caches, the per-shard sweep and the tick's bookkeeping."""
