"""axe-core in the browser tests: `assert_accessible(page)` runs axe (npm axe-core, pinned in
tests/e2e/node/package.json) on the page as it is and fails on any WCAG 2.1 A or AA violation,
naming the rule, the elements and how to fix them.

axe is evaluated through the DevTools protocol (page.evaluate), which the pages' strict
Content-Security-Policy does not apply to: nothing about the page is loosened for the check."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page

AXE = Path(__file__).resolve().parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
_source: str | None = None


def _axe_source() -> str:
    global _source
    if _source is None:
        if not AXE.is_file():
            pytest.fail(f"{AXE} is missing: run `make node-deps` (npm ci in tests/e2e/node)",
                        pytrace=False)
        _source = AXE.read_text()
    return _source


def violations(page: Page) -> list[dict]:
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(f"() => {{ {_axe_source()}\n}}")
    return page.evaluate(
        "async (tags) => (await window.axe.run(document, {runOnly: {type: 'tag', values: tags},"
        " resultTypes: ['violations']})).violations.map(v => ({id: v.id, impact: v.impact,"
        " help: v.help, nodes: v.nodes.map(n => ({target: n.target.join(' '),"
        " summary: n.failureSummary}))}))", TAGS)


def assert_accessible(page: Page, what: str = "") -> None:
    """No WCAG 2.1 A/AA violation on the page as it is now."""
    found = violations(page)
    if found:
        lines = [f"axe: {len(found)} WCAG 2.1 A/AA violation(s) on {what or page.url}:"]
        for item in found:
            lines.append(f"- {item['id']} ({item['impact']}): {item['help']}")
            for node in item["nodes"][:6]:
                lines.append(f"    {node['target']}: {node['summary']}")
        pytest.fail("\n".join(lines), pytrace=False)


SKIP_LINK = re.compile(r"\.(jsonl|json|csv|pdf|zip)(\?|$)|format=|export|download")


def crawl(page: Page, start: str, prefix: str, *, depth: int = 3, limit: int = 80,
          lang: str | None = None, shoot: Callable[[Page, str], None] | None = None
          ) -> set[str]:
    """Every page under `prefix` reachable by links from `start` (up to `depth` clicks, at
    most `limit` pages; downloads and exports left out): each answers 200, says
    <html lang=`lang`> when given, and passes axe. `shoot(page, url)` runs after each check
    (screenshots). Returns the URLs checked."""
    seen: set[str] = set()
    queue = [start.split("#")[0]]
    for _depth in range(depth):
        found: list[str] = []
        for url in queue:
            if url in seen or len(seen) >= limit:
                continue
            seen.add(url)
            response = page.goto(url)
            assert response is not None and response.status == 200, url
            if lang is not None:
                assert page.locator("html").get_attribute("lang") == lang, url
            assert_accessible(page, f"{url} ({lang})" if lang else url)
            if shoot is not None:
                shoot(page, url)
            for href in page.eval_on_selector_all(
                    "a[href]", "els => els.map(e => e.href.split('#')[0])"):
                if href.startswith(prefix) and href not in seen and not SKIP_LINK.search(href):
                    found.append(href)
        queue = sorted(set(found))
    return seen
