"""Real servers and real worker processes for the tests (no mocks, no eager mode)."""
