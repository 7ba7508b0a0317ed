"""How talk time becomes billed minutes: 400-number carriers bill each answered call by the started minute.

One definition, used by the CDR exporter (minutes this month), minutes packages and `callrouter usage`.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, case


def billed_minutes(billable_seconds: int) -> int:
    """Minutes charged for one call: every started minute counts; an unanswered call costs nothing."""
    return (billable_seconds + 59) // 60 if billable_seconds > 0 else 0


def billed_minutes_sql(billable_seconds: ColumnElement[int]) -> ColumnElement[int]:
    """The same rule as a SQL expression (integer division on Postgres and SQLite alike)."""
    return case((billable_seconds > 0, (billable_seconds + 59) // 60), else_=0)
