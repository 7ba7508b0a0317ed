"""The billing rule of `callrouter.model.billing` as a SQL expression, for sums computed in the database.

Kept beside the store's queries (the model imports no SQL); `tests/test_packages.py` checks that the two
agree.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, case


def billed_minutes_sql(billable_seconds: ColumnElement[int]) -> ColumnElement[int]:
    """model.billing.billed_minutes in SQL: every started minute (integer division on Postgres and SQLite alike)."""
    return case((billable_seconds > 0, (billable_seconds + 59) // 60), else_=0)
