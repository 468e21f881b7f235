"""The web UI end to end in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright;
Playwright's own browser is never downloaded): log in, follow a trace to the version it caused,
revert it, and see the change everywhere it shows.

`make test` installs Chromium (apt) when it is missing and sets CRYSTALLISE_REQUIRE_BROWSER=1, so
there a missing browser fails instead of skipping. CRYSTALLISE_UI_SCREENSHOTS=DIR keeps the PNGs
(docs/web.md's screenshot is made this way).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the web UI needs the `serve` extra")

from crystallise.server import create_app  # noqa: E402
from crystallise.api import create_key  # noqa: E402
from crystallise.engine.home import Home  # noqa: E402
from tests.servers import Server  # noqa: E402
from tests.ui_seed import seed  # noqa: E402

CHROMIUM = os.environ.get("CRYSTALLISE_CHROMIUM", "/usr/bin/chromium")
# Flags that work on a closed network, as root, with no display.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[dev]'"
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM}: apt-get install -y chromium (make test does it)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason:
        if os.environ.get("CRYSTALLISE_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    home = Home.init(tmp_path / "home")
    seeded = seed(home, tmp_path / "reports")
    key = create_key(home.path, "acme")[0]
    with Server(create_app(home, upstream="scripted:ok", reports_dir=str(tmp_path / "reports"))) as server:
        yield {"home": home, "key": key, "url": server.url, "s": seeded}
    home.close()


def shot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("CRYSTALLISE_UI_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def test_follow_a_trace_to_its_version_revert_it_and_see_the_change(browser, served, tmp_path):
    s, home = served["s"], served["home"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # 1. the UI asks for a key, then shows acme's data
    page.goto(served["url"] + "/ui/traces")
    assert "/ui/login" in page.url
    page.fill("input[name=key]", served["key"])
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/traces")
    assert "org acme" in page.inner_text("header")
    assert page.locator(f"a:text('{s.globex_trace}')").count() == 0

    # 2. open the trace that taught something: its items shown and its feedback
    page.click(f"a:text('{s.acme_trace}')")
    page.wait_for_url(f"**/ui/traces/{s.acme_trace}")
    shown = page.inner_text("#shown")
    assert "Acme customers get 60 days" in shown and "Refunds are allowed within 30 days" in shown
    assert "60 days" in page.inner_text("#feedback")
    shot(page, tmp_path, "ui-trace")

    # 3. follow it to the version whose provenance includes it
    page.click(f"[data-caused-version='{s.acme_version}']")
    page.wait_for_url(f"**/ui/versions/{s.acme_version}")
    assert "accept" in page.inner_text("h1") and "McNemar" in page.inner_text("#verdict")
    assert page.locator(f"#provenance a[data-provenance='{s.acme_trace}']").count() == 1
    assert "Quote the 60-day window for acme customers" in page.inner_text("#diff")
    shot(page, tmp_path, "ui-version")

    # 4. revert it (the page asks to confirm), landing on the new version that undoes it
    page.once("dialog", lambda dialog: dialog.accept())
    page.fill("#revert input[name=reason]", "60 days is only for premium customers")
    page.click("#revert-button")
    page.wait_for_url("**/ui/versions/*")
    new = int(page.url.rstrip("/").rsplit("/", 1)[1])
    assert new > s.acme_version and f"Revert version {s.acme_version}" in page.inner_text("main")
    assert "60 days is only for premium customers" in page.inner_text("#verdict")

    # 5. see the change: the old version is marked, the rule is gone, the trace shows it
    page.goto(f"{served['url']}/ui/versions/{s.acme_version}")
    assert f"reverted by v{new}" in page.inner_text("h1") and page.locator("#revert-button").count() == 0
    page.goto(served["url"] + "/ui/items")
    assert "Quote the 60-day window" not in page.inner_text("main")
    page.fill("input[data-filter-table]", "no such words")  # the in-page filter (app.js)
    assert page.locator("#items-table tbody tr:visible").count() == 0
    page.fill("input[data-filter-table]", "ignore previous")
    assert page.locator("#items-table tbody tr:visible").count() == 1
    page.goto(f"{served['url']}/ui/traces/{s.acme_trace}")
    assert f"reverted by v{new}" in page.inner_text("#versions")
    assert home.store.get_version(s.acme_version).reverted_by == new

    # 6. the learning curve of a bench report renders as an image
    page.goto(served["url"] + "/ui/reports/demo")
    width = page.eval_on_selector("img.curve", "img => img.complete ? img.naturalWidth : 0")
    assert width > 100
    shot(page, tmp_path, "ui-report")
    page.goto(served["url"] + "/ui/")
    shot(page, tmp_path, "ui-overview")
    assert errors == []
    context.close()


def test_approve_a_held_change_set_from_the_review_page(browser, served, tmp_path):
    from tests.test_api_review import learned

    home = served["home"]
    home.config["review"] = [{"layer": "context", "level": "org"}]
    home.save_config()
    held, _ = learned(home, "Ask acme customers for the order number first", "acme")
    assert home.store.get_changeset(held.id).status == "needs_review"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # 1. log in, open Review from the navigation: the held change set waits there
    page.goto(served["url"] + "/ui/login")
    page.fill("input[name=key]", served["key"])
    page.click("button[type=submit]")
    page.click("header nav a[data-nav=review]")
    page.wait_for_url("**/ui/review")
    assert page.locator(f"tr[data-changeset='{held.id}']").count() == 1

    # 2. the proposal: why it waits, its verdict, its diff
    page.click(f"a:text('{held.id}')")
    page.wait_for_url(f"**/ui/review/{held.id}")
    assert "review rule: layer context, level org" in page.inner_text("#waiting")
    assert "McNemar" in page.inner_text("#verdict")
    assert "Ask acme customers for the order number first" in page.inner_text("#diff")
    shot(page, tmp_path, "ui-review")

    # 3. approve it (the page asks to confirm): it becomes a version, live at once
    page.once("dialog", lambda dialog: dialog.accept())
    page.fill("#approve-form input[name=by]", "alice")
    page.fill("#approve-form input[name=note]", "checked with support")
    page.click("#approve-button")
    page.wait_for_url("**/ui/versions/*")
    number = int(page.url.rstrip("/").rsplit("/", 1)[1])
    assert "approved by alice" in page.inner_text("#verdict")
    version = home.store.get_version(number)
    assert version.changeset_id == held.id and home.store.get_changeset(held.id).status == "committed"
    page.goto(served["url"] + "/ui/items?org=acme")
    assert "Ask acme customers for the order number first" in page.inner_text("main")
    page.goto(served["url"] + "/ui/review")
    assert page.locator(f"tr[data-changeset='{held.id}']").count() == 0
    assert errors == []
    context.close()
