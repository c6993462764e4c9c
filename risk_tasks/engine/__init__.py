"""The pure risk engine: formulas, order simulation, policies, liquidation planning.

Plain data in, plain data out. Nothing here imports Celery, Redis, SQLAlchemy or the
network (tests/unit/test_engine_purity.py asserts it), so every function can be tested
and benchmarked alone.
"""
