"""Pictures drawn on the server as plain shapes (rectangles, text, paths), rendered by templates/numbers_svg.html.

A page lays out its picture in Python with these frozen shapes and the template writes them as SVG with
presentation attributes only (fill, stroke: no style attribute, which the CSP refuses), every text escaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FONT = 14  # px of ordinary text in the pictures
LINE = 20  # px between lines of text


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    stroke: str = "none"
    rx: float = 6


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    fill: str = "#1f2933"
    size: int = FONT
    bold: bool = False
    anchor: str = "start"  # start, middle, end
    css: str = ""  # a class, so tests and stylesheets can find e.g. each line of a group


@dataclass(frozen=True)
class Path:
    d: str
    stroke: str = "#9aa5b1"
    arrow: bool = False


@dataclass(frozen=True)
class Circle:
    cx: float
    cy: float
    r: float
    fill: str


@dataclass(frozen=True)
class Drawing:
    id: str
    title: str  # read by screen readers; the page repeats the facts as text
    width: float
    height: float
    rects: tuple[Rect, ...] = ()
    paths: tuple[Path, ...] = ()
    circles: tuple[Circle, ...] = ()
    texts: tuple[Text, ...] = ()
    css: str = field(default="")


def text_units(text: str) -> float:
    """Width in ems, roughly: a Chinese character is one em, a Latin letter or digit a little over half."""
    return sum(1.0 if ord(ch) >= 0x2E80 else (0.3 if ch == " " else 0.58) for ch in text)


def wrap(text: str, max_units: float) -> list[str]:
    """Lines of at most `max_units` ems, broken between characters (Chinese has no spaces to break at)."""
    lines: list[str] = []
    current, width = "", 0.0
    for ch in text:
        w = text_units(ch)
        if width + w > max_units and current:
            lines.append(current.rstrip())
            current, width = "", 0.0
            if ch == " ":
                continue
        current += ch
        width += w
    if current or not lines:
        lines.append(current)
    return lines


def num(value: float) -> str:
    """A coordinate as SVG wants it: short, no exponent."""
    return f"{value:.1f}".rstrip("0").rstrip(".")
