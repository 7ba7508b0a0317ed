"""The database: CDRs, call statistics, shared routing state and runtime blacklist entries.

One code path for Postgres (asyncpg) and the embedded default, SQLite (aiosqlite). The few places where
the two differ (insert-or-ignore, upsert) go through `dialect.py`.
"""
