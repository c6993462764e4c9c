"""The hot state in Redis: key layout, codecs, Lua scripts and the store."""
