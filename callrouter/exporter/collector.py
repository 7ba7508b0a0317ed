"""Rendering the CDR totals for a scrape: plain dicts to metric families, no database work."""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from callrouter.exporter.totals import CdrTotals


class CdrCollector(Collector):
    """Families appear (possibly empty) from the start; their samples once the baseline is loaded."""

    def __init__(self, totals: Callable[[], CdrTotals | None], clock: Callable[[], datetime]) -> None:
        self._totals = totals
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        t = self._totals()
        calls = CounterMetricFamily("callrouter_cdr_calls", "Calls in the CDRs by 400 number and disposition", labels=["number", "disposition"])
        answered = CounterMetricFamily("callrouter_cdr_answered_calls", "Answered calls in the CDRs by 400 number", labels=["number"])
        attempts = CounterMetricFamily(
            "callrouter_cdr_hunt_attempts", "Lines rung (or skipped at their limit: FULL) by resulting status", labels=["number", "status"]
        )
        talk = HistogramMetricFamily("callrouter_cdr_talk_seconds", "Billable talk time of answered calls", labels=["number"])
        ring = HistogramMetricFamily("callrouter_cdr_ring_seconds", "Ringing the caller heard, calls that rang", labels=["number"])
        today = GaugeMetricFamily("callrouter_cdr_calls_today", "Calls started today (the number's local day)", labels=["number"])
        ratio = GaugeMetricFamily(
            "callrouter_cdr_answer_ratio_today", "Answered / all calls today; absent before the first call of the day", labels=["number"]
        )
        minutes = GaugeMetricFamily(
            "callrouter_cdr_month_billed_minutes", "Billed minutes this calendar month (each started minute of an answered call)", labels=["number"]
        )
        month_talk = GaugeMetricFamily("callrouter_cdr_month_talk_seconds", "Talk time this calendar month", labels=["number"])
        if t is not None:
            now = self._clock()
            answered_by: dict[str, int] = {}
            for (number, disposition), n in sorted(t.calls.items()):
                calls.add_metric([number, disposition], n)
                if disposition == "answered":
                    answered_by[number] = n
            for (number, status), n in sorted(t.attempts.items()):
                attempts.add_metric([number, status], n)
            for number in sorted(t.numbers()):
                answered.add_metric([number], answered_by.get(number, 0))
                day = t.current(t.today, number, now)
                today.add_metric([number], day.calls)
                if day.calls:
                    ratio.add_metric([number], day.answered / day.calls)
                month = t.current(t.month, number, now)
                minutes.add_metric([number], month.billed_minutes)
                month_talk.add_metric([number], month.talk_seconds)
            for family, table in ((talk, t.talk), (ring, t.ring)):
                for number, h in sorted(table.items()):
                    family.add_metric([number], h.cumulative(), h.total)
        yield from (calls, answered, attempts, talk, ring, today, ratio, minutes, month_talk)
