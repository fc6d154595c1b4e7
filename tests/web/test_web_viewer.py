"""The viewer page in a real browser: Debian's chromium, driven by Playwright, against a running archive."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from engine.archive import Archive
from engine.testing.dcmtk import LOOPBACK
from engine.testing.series import write_ct_series
from engine.web import WebServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
SLICES = 8
TIMEOUT_MS = 20_000

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)", allow_module_level=True)


def fnv1a(raw: np.ndarray) -> int:
    """The checksum viewer.js records per draw: FNV-1a (32 bit) over the little-endian bytes of the values."""
    value = 0x811C9DC5
    for byte in raw.astype(raw.dtype.newbyteorder("<")).tobytes():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


@pytest.fixture(scope="module")
def viewer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Archive, str]]:
    """An archive holding only a generated CT series, served with the viewer on loopback."""
    root = tmp_path_factory.mktemp("viewer")
    archive = Archive.open(root / "archive")
    try:
        for path in write_ct_series(root / "ct", SLICES):
            archive.ingest_file(path)
        server = WebServer(archive, LOOPBACK, 0)
        host, port = server.start()
        try:
            yield archive, f"http://{host}:{port}"
        finally:
            server.stop()
    finally:
        archive.close()


@pytest.fixture(scope="module")
def page(viewer_server: tuple[Archive, str]) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


# Large arrays leave the page as base64 text: a JSON list of a million numbers takes seconds to cross.
_BASE64 = "bytes => { let s = ''; for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]); return btoa(s); }"
_LAST_FRAME = f"(() => {{ const f = window.viewer.lastFrame; return ({_BASE64})(new Uint8Array(f.buffer)); }})()"
_RED = (
    "(() => { const d = document.getElementById('image').getContext('2d').getImageData(0, 0, 512, 512).data;"
    f" return ({_BASE64})(d.filter((_, i) => i % 4 === 0)); }})()"
)


def _last_frame(page: Any) -> np.ndarray:
    """The raw values of window.viewer.lastFrame (native little endian in the page), as int16."""
    return np.frombuffer(base64.b64decode(page.evaluate(_LAST_FRAME)), dtype="<i2")


def _painted(page: Any) -> np.ndarray:
    """The red channel of the 512 x 512 canvas (grey: red = green = blue)."""
    return np.frombuffer(base64.b64decode(page.evaluate(_RED)), dtype=np.uint8).reshape(512, 512)


def _first_sop(archive: Archive) -> str:
    [study] = archive.study_uids()
    [series] = archive.series_uids(study)
    records = [archive.record(sop) for sop in archive.instance_uids(series)]
    return min(records, key=lambda r: r.instance_number or 0).sop_instance_uid


def _open_ct_series(page: Any, base: str) -> None:
    page.goto(base + "/")
    page.locator("#studies li").first.click()
    page.locator("#series li", has_text="CT").first.click()


def test_viewer_files_are_served(viewer_server: tuple[Archive, str]) -> None:
    _, base = viewer_server
    with httpx.Client(base_url=base) as http:
        index = http.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        assert "/viewer/viewer.js" in index.text
        script = http.get("/viewer/viewer.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert http.get("/viewer/missing.js").status_code == 404


def test_viewer_draws_low_resolution_first_then_the_stored_frame(
    viewer_server: tuple[Archive, str], page: Any
) -> None:
    archive, base = viewer_server
    sop = _first_sop(archive)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    _open_ct_series(page, base)
    page.wait_for_function(
        "sop => window.viewer.draws.some(d => d.sop === sop && d.level === 0)", arg=sop, timeout=TIMEOUT_MS
    )

    draws = page.evaluate("window.viewer.draws")
    assert not errors and page.evaluate("window.viewer.errors") == []
    of_first = [(d["level"], d["width"], d["height"]) for d in draws if d["sop"] == sop]
    assert of_first[0] == (2, 128, 128), of_first  # the preview came first, at a quarter of the side
    assert (0, 512, 512) in of_first[1:], of_first

    stored = archive.read_frame(sop, 0)
    final = next(d for d in draws if d["sop"] == sop and d["level"] == 0)
    assert final["checksum"] == fnv1a(stored)
    assert page.evaluate("window.viewer.lastFrame.constructor.name") == "Int16Array"
    np.testing.assert_array_equal(_last_frame(page).reshape(stored.shape), stored)
    preview = next(d for d in draws if d["sop"] == sop and d["level"] == 2)
    assert preview["checksum"] == fnv1a(archive.read_frame(sop, 0, 2))

    # Window/level defaults come from the instance (WindowCenter 40, WindowWidth 100 in the CT series).
    assert page.input_value("#wc") == "40" and page.input_value("#ww") == "100"


def test_viewer_scrolls_with_arrow_keys_and_wheel(viewer_server: tuple[Archive, str], page: Any) -> None:
    archive, base = viewer_server
    _open_ct_series(page, base)
    [study] = archive.study_uids()
    [series] = archive.series_uids(study)
    by_number = sorted((archive.record(s) for s in archive.instance_uids(series)), key=lambda r: r.instance_number or 0)
    second, third = by_number[1].sop_instance_uid, by_number[2].sop_instance_uid
    page.wait_for_function("window.viewer.instances.length > 0 && window.viewer.lastFrame !== null")

    page.keyboard.press("ArrowDown")
    page.wait_for_function("sop => window.viewer.draws.some(d => d.sop === sop && d.level === 0)", arg=second)
    page.locator("#image").hover()
    page.mouse.wheel(0, 100)
    page.wait_for_function("sop => window.viewer.draws.some(d => d.sop === sop && d.level === 0)", arg=third)
    assert page.evaluate("window.viewer.index") == 2
    np.testing.assert_array_equal(_last_frame(page).reshape(512, 512), archive.read_frame(third, 0))


def _windowed(raw: np.ndarray, center: float, width: float) -> np.ndarray:
    """The grey levels viewer.js paints: rescaled (slope 1, intercept -1024 here), windowed linearly, clipped."""
    modality = raw.astype(np.float64) * 1.0 + -1024.0
    grey = np.floor((modality - (center - width / 2)) * (255 / width) + 0.5)  # Math.round: half up
    return np.clip(grey, 0, 255).astype(np.uint8)


def test_viewer_window_inputs_repaint_the_stored_values(viewer_server: tuple[Archive, str], page: Any) -> None:
    archive, base = viewer_server
    sop = _first_sop(archive)
    _open_ct_series(page, base)
    page.wait_for_function(
        "sop => window.viewer.draws.some(d => d.sop === sop && d.level === 0) && window.viewer.index === 0", arg=sop
    )
    stored = archive.read_frame(sop, 0)
    np.testing.assert_array_equal(_painted(page), _windowed(stored, 40, 100))

    drawn = page.evaluate("window.viewer.draws.length")
    page.fill("#wc", "300")
    page.fill("#ww", "2000")
    page.dispatch_event("#ww", "change")
    page.wait_for_function("n => window.viewer.draws.length > n && window.viewer.width === 2000", arg=drawn)
    np.testing.assert_array_equal(_painted(page), _windowed(stored, 300, 2000))
