"""How talk time becomes billed minutes: 400-number carriers bill each answered call by the started minute.

One definition, used by the CDR exporter (minutes this month), minutes packages and `callrouter usage`;
`callrouter.store.billing` writes the same rule in SQL for sums the database computes.
"""

from __future__ import annotations


def billed_minutes(billable_seconds: int) -> int:
    """Minutes charged for one call: every started minute counts; an unanswered call costs nothing."""
    return (billable_seconds + 59) // 60 if billable_seconds > 0 else 0

