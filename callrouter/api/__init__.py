"""The admin HTTP API (aiohttp): health, metrics, calls, recordings, runtime blacklist, statistics, plans, reload."""
