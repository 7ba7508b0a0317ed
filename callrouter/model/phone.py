"""Phone numbers as China's networks present them, reduced to one comparable form."""

from __future__ import annotations

import re

_MOBILE = re.compile(r"1[3-9][0-9]{9}\Z")
_NOT_DIGITS = re.compile(r"[^0-9]+")


def ascii_digits(text: str) -> str:
    """The ASCII digits of `text`, in order: str.isdigit() would also take "٣" and "³", which no network dials."""
    return _NOT_DIGITS.sub("", text)


def normalize_number(raw: str) -> str:
    """Digits only, with China's country code and trunk prefixes removed from mobile numbers.

    "+86 139-1234-5678", "008613912345678", "8613912345678" and "013912345678" are all 13912345678;
    landlines keep their area code ("01088886666"). Anything else keeps its digits as they are, so an
    international number still starts with 00 and can be matched by prefix.
    """
    text = raw.strip()
    plus = text.startswith("+")
    digits = ascii_digits(text)[:32]
    if plus:
        digits = "00" + digits
    if digits.startswith("0086"):
        digits = digits[4:]
        if not _MOBILE.match(digits) and not digits.startswith("0"):
            digits = "0" + digits  # +86 10 8888 6666 -> 01088886666
    elif digits.startswith("86") and _MOBILE.match(digits[2:]):
        digits = digits[2:]
    elif digits.startswith("0") and _MOBILE.match(digits[1:]):
        digits = digits[1:]
    return digits
