"""The viewer page behind DICOMweb authentication, in a real browser (Debian's chromium, via Playwright):
it asks for credentials on 401, takes a token from the URL fragment, and sends Authorization on every request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.archive import Archive
from engine.audit import AuditLog, read_audit
from engine.config import AuthSettings, Credential, load_settings
from engine.security import hash_password
from engine.testing.dcmtk import LOOPBACK
from engine.testing.series import write_ct_series
from engine.web import WebServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
TIMEOUT_MS = 20_000
TOKEN = "viewer-token-" + "v" * 24
AUTH = AuthSettings(tokens=(Credential("radiologist", "read", TOKEN),),
                    users=(Credential("alice", "read", hash_password("alice's password")),))

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Archive, str, Path]]:
    root = tmp_path_factory.mktemp("viewer-auth")
    with Archive(load_settings(archive=root / "archive")) as archive, AuditLog(root / "audit.log") as audit:
        for path in write_ct_series(root / "ct", 3):
            archive.ingest_file(path)
        server = WebServer(archive, LOOPBACK, 0, auth=AUTH, audit=audit)
        host, port = server.start()
        try:
            yield archive, f"http://{host}:{port}", root / "audit.log"
        finally:
            server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()  # its own sessionStorage: no credentials left over from another test
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield page
    finally:
        context.close()


def _first_full_draw(page: Any, archive: Archive) -> None:
    """Open the CT series and wait for a full-resolution draw whose checksum is the stored frame's."""
    [study] = archive.study_uids()
    [series] = archive.series_uids(study)
    records = sorted((archive.record(s) for s in archive.instance_uids(series)), key=lambda r: r.instance_number or 0)
    page.locator("#studies li").first.click()
    page.locator("#series li", has_text="CT").first.click()
    sop = records[0].sop_instance_uid
    page.wait_for_function("sop => window.viewer.draws.some(d => d.sop === sop && d.level === 0)", arg=sop)
    assert page.evaluate("window.viewer.errors") == []


def test_the_page_asks_for_credentials_then_works_with_a_typed_token(served: tuple[Archive, str, Path],
                                                                     page: Any) -> None:
    archive, base, audit_path = served
    page.goto(base + "/")
    page.wait_for_function("window.viewer.signInShown === true")
    assert page.is_visible("#signin") and "needs credentials" in page.inner_text("#signin-message")
    assert page.evaluate("window.viewer.errors") == []

    page.fill("#signin-token", "wrong-token-" + "x" * 20)
    page.click("#signin button")
    page.wait_for_function("document.getElementById('signin-message').textContent.includes('not accepted')")

    page.fill("#signin-token", TOKEN)
    page.click("#signin button")
    page.wait_for_selector("#studies li")
    assert not page.is_visible("#signin")
    _first_full_draw(page, archive)
    events = read_audit(audit_path)
    frames = [e for e in events if e["who"] == "radiologist" and "/frames/" in str(e["path"])]
    assert frames and all(e["status"] == 200 for e in frames)
    assert not [e for e in events if "favicon" in str(e["path"])]  # the browser's icon request is no incident


def test_a_token_in_the_url_fragment_signs_in_and_leaves_the_address_bar(served: tuple[Archive, str, Path],
                                                                         page: Any) -> None:
    archive, base, _ = served
    page.goto(f"{base}/#token={TOKEN}")
    page.wait_for_selector("#studies li")
    assert "token" not in page.url and page.evaluate("window.viewer.signInShown") is False
    _first_full_draw(page, archive)


def test_a_user_and_password_sign_in_with_basic(served: tuple[Archive, str, Path], page: Any) -> None:
    archive, base, audit_path = served
    page.goto(base + "/")
    page.wait_for_function("window.viewer.signInShown === true")
    page.fill("#signin-user", "alice")
    page.fill("#signin-password", "alice's password")
    page.click("#signin button")
    page.wait_for_selector("#studies li")
    _first_full_draw(page, archive)
    assert page.input_value("#signin-password") == ""  # not left in the form
    assert any(e["who"] == "alice" and e["what"] == "WADO-RS" for e in read_audit(audit_path))

