"""axe-core in the browser tests: `assert_accessible(page)` runs axe (npm axe-core, pinned in
tests/e2e/node/package.json) on the page as it is and fails on any WCAG 2.1 A or AA violation,
naming the rule, the elements and how to fix them.

axe is evaluated through the DevTools protocol (page.evaluate), which the pages' strict
Content-Security-Policy does not apply to: nothing about the page is loosened for the check."""

from __future__ import annotations

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
