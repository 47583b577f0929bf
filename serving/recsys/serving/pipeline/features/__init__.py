"""Feature hydration stage and the online feature reads (Feast/Redis client, item cache, item snapshot)."""
