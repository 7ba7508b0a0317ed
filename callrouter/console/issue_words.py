"""A plan check's issue in the page's language. The validator writes English for ops (`callrouter check`);
a company's form shows each issue next to its field, in Chinese by default: by pydantic's kind of error
where the validator gives one, else by matching the English of the plan's own checks a form can reach.
What matches nothing is shown as the validator said it, marked as a failed check."""

from __future__ import annotations

import re
from typing import Callable

from callrouter.config.yamlsource import ConfigIssue
from callrouter.console.i18n import MESSAGES

# The plan validator's messages (config/plan.py, config/hours.py, ...) a console form can reach, and the
# words key that says each; tests/test_console_issue_words.py checks each against the validator's output.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), key) for p, key in (
    (r"^every line is disabled; enable at least one$", "check.all_disabled"),
    (r"^line id '(?P<id>[^']*)' is used twice in this group$", "check.line_id_twice"),
    (r"^give exactly one of 'number' or 'target'$", "check.number_or_target"),
    (r"^'(?P<value>[^']*)' is not a phone number", "check.not_phone"),
    (r"^'(?P<value>[^']*)' is not a time of day HH:MM$", "check.not_time"),
    (r"^'(?P<value>[^']*)' is not a time range like (?P<example>\S+)$", "check.not_range"),
    (r"^'(?P<value>[^']*)': the end must be after the start", "check.end_first"),
    (r"^'(?P<value>[^']*)': a range cannot start at 24:00$", "check.starts_at_24"),
    (r"^'(?P<value>[^']*)' is not a DTMF key", "check.not_key"),
    (r"^option '(?P<option>[^']*)' is longer than max_digits=(?P<digits>\d+)$", "check.key_too_long"),
    (r"^'(?P<value>[^']*)' is not an action", "check.not_action"),
))


def issue_text(issue: ConfigIssue, lang: str, t: Callable[..., str], shown: str) -> str:
    """`shown`: the issue's English as the form would show it (its place already left out)."""
    if lang == "en":
        return shown
    key = f"check.{issue.kind}"
    if issue.kind and key in MESSAGES:
        params = dict(issue.params)
        if "expected" in params:
            params["expected"] = params["expected"].replace(" or ", "、").replace(", ", "、")
        try:
            return t(key, **params)
        except (KeyError, IndexError):  # a kind whose limits came differently: say it as written
            return t("check.other", message=shown)
    for pattern, words in _PATTERNS:
        if m := pattern.search(_after_place(shown)):
            return t(words, **m.groupdict())
    return t("check.other", message=shown)


def _after_place(message: str) -> str:
    """The message without a leading "a.b.c: " place (issues shown above the form keep theirs)."""
    head, sep, rest = message.partition(": ")
    return rest if sep and " " not in head and "'" not in head else message
