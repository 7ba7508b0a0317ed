"""The console's vendored JS and CSS: exactly the files VENDORED.md records, unchanged, and no CDN anywhere.

The console's CSP is `default-src 'self'`, so a resource from another origin would simply not load; these
checks catch it before a browser does. The files' behaviour under that CSP is tests/browser/test_vendored_assets.py.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "callrouter" / "console" / "static"
VENDOR = STATIC / "vendor"
RECORD = VENDOR / "VENDORED.md"
ROW = re.compile(r"^\| `(?P<file>[^`]+)` \| `(?P<package>[^`]+)`[^|]*\| (?P<version>[0-9][^ |]*) \| (?P<integrity>[^|]+) \| `(?P<sha256>[0-9a-f]{64})` \| (?P<licence>[^|]+) \|$")
# URLs that load nothing: a licence banner in a comment, XML namespace names. Each entry is checked to sit
# in a comment or be a namespace, so the list cannot hide a real load.
BANNER_URLS = {"uPlot.iife.min.js": ("https://github.com/leeoniya/uPlot",)}
NAMESPACE = re.compile(r"^http://www\.w3\.org/(2000/svg|1999/xhtml|1999/xlink|XML/1998/namespace)$")
URL = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s"'`)<>]*""")
TEXT_SUFFIXES = {".js", ".css", ".html", ".svg", ".map", ".json", ".txt"}


@dataclass(frozen=True)
class Vendored:
    file: str
    package: str
    version: str
    sha256: str
    licence: str


def vendored_files() -> list[Vendored]:
    """The rows of VENDORED.md's table."""
    rows = [ROW.match(line) for line in RECORD.read_text().splitlines() if line.startswith("| `")]
    assert all(rows), "a row of VENDORED.md's table does not parse: " + repr([r for r in rows if not r])
    return [Vendored(m["file"], m["package"], m["version"], m["sha256"], m["licence"].strip()) for m in rows if m]


def version_of(package: str) -> str:
    """The version VENDORED.md records for an npm package (the browser test checks what the code reports)."""
    versions = {v.version for v in vendored_files() if v.package == package}
    assert len(versions) == 1, f"{package}: {versions}"
    return versions.pop()


def test_every_recorded_file_is_there_unchanged() -> None:
    rows = vendored_files()
    assert {r.package for r in rows} == {"htmx.org", "htmx-ext-sse", "uplot"}
    for row in rows:
        path = VENDOR / row.file
        assert path.is_file(), f"VENDORED.md lists {row.file}, which is missing"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256, f"{row.file} differs from what VENDORED.md records"


def test_every_vendored_file_is_recorded_and_has_its_licence_beside_it() -> None:
    recorded = {r.file for r in vendored_files()}
    present = {p.name for p in VENDOR.iterdir()} - {"VENDORED.md"}
    assert present == recorded, f"unrecorded: {sorted(present - recorded)}; missing: {sorted(recorded - present)}"
    licence_files = {r.package: r.file for r in vendored_files() if r.file.endswith(".LICENSE")}
    assert set(licence_files) == {r.package for r in vendored_files()}, "every package needs its licence file"


def test_htmx_is_2_0_not_4() -> None:
    """htmx 4 changes attribute inheritance; the pages are written for 2 (STYLE.md)."""
    assert version_of("htmx.org").startswith("2.0."), version_of("htmx.org")
    assert version_of("uplot").startswith("1.6."), version_of("uplot")
    assert f'version:"{version_of("htmx.org")}"' in (VENDOR / "htmx.min.js").read_text()


def _in_comment(text: str, start: int) -> bool:
    """Whether position `start` lies inside a /* ... */ comment (good enough for licence banners)."""
    opened = text.rfind("/*", 0, start)
    return opened != -1 and text.find("*/", opened) > start


def test_nothing_in_static_loads_from_another_origin() -> None:
    offenders = []
    for path in sorted(STATIC.rglob("*")):
        if not path.is_file() or path.suffix not in TEXT_SUFFIXES:
            continue
        text = path.read_text(errors="replace")
        for m in URL.finditer(text):
            url = m.group(0)
            if NAMESPACE.match(url):
                continue
            if url in BANNER_URLS.get(path.name, ()) and _in_comment(text, m.start()):
                continue
            offenders.append(f"{path.relative_to(ROOT)}: {url}")
    assert not offenders, "static files must not reference other origins (no CDN; CSP default-src 'self'):\n" + "\n".join(offenders)


def test_the_wheel_carries_the_static_files_and_templates() -> None:
    """Without package data an installed callrouter would serve a console with no JS, CSS or pages."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"].get("callrouter.console", [])
    package = STATIC.parent
    covered = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    wanted = {path for folder in ("static", "templates") for path in (package / folder).rglob("*") if path.is_file()}
    assert any(p.startswith("static/") for p in patterns) and any(p.startswith("templates/") for p in patterns), patterns
    missing = sorted(str(p.relative_to(package)) for p in wanted - covered)
    assert not missing, f"pyproject.toml [tool.setuptools.package-data] callrouter.console {patterns} leaves out: {missing}"
