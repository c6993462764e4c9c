"""Celery tasks: thin adapters, one module per domain. Names are pinned in DESIGN.md."""
