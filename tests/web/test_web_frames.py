"""WADO-RS frames over real HTTP: media types, levels, byte ranges, a series at one level, rendered images."""

from __future__ import annotations

import httpx
import imagecodecs
import numpy as np
import pydicom
import pytest
from web_helpers import Served, split_multipart

from engine import codecs
from engine.types import (
    CODEC_HTJ2K,
    EXPLICIT_VR_LE,
    HTJ2K_LOSSLESS_RPCL,
    JPEG2000_LOSSLESS,
    JPEGLS_LOSSLESS,
)


def _frame_url(served: Served, path: object, frames: str = "1") -> tuple[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    sop = str(ds.SOPInstanceUID)
    return sop, f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{sop}/frames/{frames}"


def _shape_dtype(served: Served, sop: str) -> tuple[tuple[int, ...], np.dtype]:
    desc = served.archive.record(sop).pixel
    assert desc is not None
    return desc.frame_shape, codecs.frame_dtype(desc)


def test_octet_stream_frames_with_dicomweb_client(served: Served) -> None:
    path = served.corpus["emri_small.dcm"]
    ds = pydicom.dcmread(path)
    frames = served.client().retrieve_instance_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [2, 5],
        media_types=("application/octet-stream",),
    )  # fmt: skip
    expected = ds.pixel_array
    assert frames == [expected[1].astype("<u2").tobytes(), expected[4].astype("<u2").tobytes()]


def test_jphc_frame_is_the_stored_codestream(served: Served) -> None:
    path = served.ct.files[0]
    sop, url = _frame_url(served, path)
    with served.http() as http:
        for accept in ("image/jphc", "image/jhc", 'multipart/related; type="image/jphc"'):
            response = http.get(url, headers={"Accept": accept})
            assert response.status_code == 200, accept
            body = split_multipart(response)[0][1] if "multipart" in accept else response.content
            assert body == served.archive.read_frame_encoded(sop, 0)[1]
    shape, dtype = _shape_dtype(served, sop)
    decoded = codecs.decode_frame(body, CODEC_HTJ2K, shape=shape, dtype=dtype)
    np.testing.assert_array_equal(decoded, pydicom.dcmread(path).pixel_array)


def test_stored_syntax_star_returns_lossy_jpeg_untouched(served: Served) -> None:
    path = served.corpus["JPEG-lossy.dcm"]
    _sop, url = _frame_url(served, path)
    with served.http() as http:
        response = http.get(url, headers={"Accept": 'multipart/related; type="*/*"; transfer-syntax=*'})
    [(headers, body)] = split_multipart(response)
    original = pydicom.dcmread(path)
    assert headers["content-type"] == f"image/jpeg; transfer-syntax={original.file_meta.TransferSyntaxUID}"
    fragment = next(pydicom.encaps.generate_frames(original.PixelData, number_of_frames=1))
    assert body == fragment


@pytest.mark.parametrize(
    ("accept", "syntax"),
    [("image/jls", JPEGLS_LOSSLESS), ("image/jp2", JPEG2000_LOSSLESS), ("image/jphc", HTJ2K_LOSSLESS_RPCL)],
)
def test_frames_transcoded_on_the_fly_decode_losslessly(served: Served, accept: str, syntax: str) -> None:
    path = served.corpus["CT_small.dcm"]
    sop, url = _frame_url(served, path)
    with served.http() as http:
        response = http.get(url, headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"] == f"{accept}; transfer-syntax={syntax}"
    desc = served.archive.record(sop).pixel
    assert desc is not None
    decoded = codecs.decode_syntax_frame(response.content, syntax, desc)
    np.testing.assert_array_equal(decoded, pydicom.dcmread(path).pixel_array)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_range_prefix_decodes_to_the_level(served: Served, level: int) -> None:
    """The first bytes of the stored codestream (Range) decode to exactly what level=k answers."""
    sop, url = _frame_url(served, served.ct.files[5])
    shape, dtype = _shape_dtype(served, sop)
    prefix_length = served.archive.record(sop).levels[0].level_prefixes[0][level]
    with served.http() as http:
        ranged = http.get(url, headers={"Accept": "image/jphc", "Range": f"bytes=0-{prefix_length - 1}"})
        leveled = http.get(f"{url}?level={level}", headers={"Accept": "image/jphc"})
        native = http.get(f"{url}?level={level}", headers={"Accept": "application/octet-stream"})
    assert ranged.status_code == 206
    full = len(served.archive.read_frame_encoded(sop, 0)[1])
    assert ranged.headers["content-range"] == f"bytes 0-{prefix_length - 1}/{full}"
    assert ranged.headers["x-level-prefixes"].split(",")[level] == str(prefix_length)
    assert leveled.content == ranged.content == served.archive.read_frame_prefix(sop, 0, level)
    from_range = codecs.decode_frame(ranged.content, CODEC_HTJ2K, shape=shape, dtype=dtype, level=level)
    expected = served.archive.read_frame(sop, 0, level)
    np.testing.assert_array_equal(from_range, expected)
    np.testing.assert_array_equal(
        np.frombuffer(native.content, dtype=dtype.newbyteorder("<")).reshape(expected.shape), expected
    )


def test_range_beyond_the_frame_is_416_and_open_ranges_work(served: Served) -> None:
    sop, url = _frame_url(served, served.ct.files[0])
    stored = served.archive.read_frame_encoded(sop, 0)[1]
    with served.http() as http:
        bad = http.get(url, headers={"Accept": "image/jphc", "Range": f"bytes={len(stored)}-"})
        tail = http.get(url, headers={"Accept": "image/jphc", "Range": "bytes=-100"})
        rest = http.get(url, headers={"Accept": "image/jphc", "Range": "bytes=100-"})
    assert bad.status_code == 416
    assert bad.headers["content-range"] == f"bytes */{len(stored)}"
    assert tail.status_code == 206 and tail.content == stored[-100:]
    assert rest.status_code == 206 and rest.content == stored[100:]


def test_series_frames_at_a_level_in_instance_order(served: Served) -> None:
    url = f"/studies/{served.ct.study_uid}/series/{served.ct.series_uid}/frames?level=2"
    with served.http() as http:
        response = http.get(url, headers={"Accept": 'multipart/related; type="image/jphc"'})
        native = http.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    parts = split_multipart(response)
    sops = served.archive.instance_uids(served.ct.series_uid)
    assert len(parts) == len(sops) == len(served.ct.files)
    for (headers, body), sop in zip(parts, sops, strict=True):
        assert headers["content-location"].endswith(f"/instances/{sop}/frames/1")
        assert body == served.archive.read_frame_prefix(sop, 0, 2)
    pixels = [np.frombuffer(body, dtype="<i2") for _, body in split_multipart(native)]
    assert [p.size for p in pixels] == [128 * 128] * len(sops)
    np.testing.assert_array_equal(pixels[7].reshape(128, 128), served.archive.read_frame(sops[7], 0, 2))


def test_rendered_png_applies_the_query_window(served: Served) -> None:
    path = served.corpus["CT_small.dcm"]
    _sop, url = _frame_url(served, path)
    original = pydicom.dcmread(path)
    hu = original.pixel_array * float(original.RescaleSlope) + float(original.RescaleIntercept)
    center, width = 40.0, 400.0
    # PS3.3 C.11.2.1.2.1, computed here independently of the engine
    expected = np.clip(np.rint((((hu - (center - 0.5)) / (width - 1)) + 0.5) * 255), 0, 255).astype(np.uint8)
    with served.http() as http:
        png = http.get(url.replace("/frames/1", "/rendered") + "?window=40,400,linear", headers={"Accept": "image/png"})
        exact = http.get(url.replace("/frames/1", "/rendered") + "?window=40,400,linear-exact",
                         headers={"Accept": "image/png"})  # PS3.18's spelling of LINEAR_EXACT
        jpeg = http.get(url + "/rendered", headers={"Accept": "image/jpeg"})
        thumb = http.get(url.replace("/frames/1", "/thumbnail"))
    assert png.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(imagecodecs.png_decode(png.content), expected)
    exact_expected = np.clip(np.rint(((hu - center) / width + 0.5) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(imagecodecs.png_decode(exact.content), exact_expected)
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert imagecodecs.jpeg8_decode(jpeg.content).shape == original.pixel_array.shape
    assert max(imagecodecs.jpeg8_decode(thumb.content).shape) <= 128


def test_packed_ybr_422_frames_render_as_rgb_and_are_native_only_whole(served: Served) -> None:
    """A YBR_FULL_422 image is kept packed: rendered, its frame is full-resolution RGB; as octet-stream
    frames (whose native form is the packed 4:2:2 bytes) it is refused, and its bulk data (the metadata's
    BulkDataURI) is the packed value as received."""
    from pydicom.pixels import pixel_array

    path = served.corpus["SC_ybr_full_422_uncompressed.dcm"]
    _sop, url = _frame_url(served, path)
    with served.http() as http:
        png = http.get(url.replace("/frames/1", "/rendered"), headers={"Accept": "image/png"})
        native = http.get(url, headers={"Accept": "application/octet-stream"})
        multipart = http.get(url)  # refused before the response starts, not broken off after it
        bulk = http.get(url.replace("/frames/1", "/bulkdata/7FE00010"), headers={"Accept": "application/octet-stream"})
    assert png.status_code == 200, png.text
    rgb = pixel_array(pydicom.dcmread(path), as_rgb=True).astype(int)
    assert np.abs(imagecodecs.png_decode(png.content).astype(int) - rgb).max() <= 1
    assert native.status_code == 406 and multipart.status_code == 406
    assert bulk.status_code == 200 and bulk.content == pydicom.dcmread(path).PixelData  # the packed value


def test_rendered_fits_the_viewport(served: Served) -> None:
    """PS3.18 8.3.5.1: the image is scaled to the viewport, aspect ratio kept, from the smallest level
    that covers it; it is not scaled up."""
    _sop, url = _frame_url(served, served.ct.files[0])  # 512 x 512
    rendered = url.replace("/frames/1", "/rendered")
    shapes = {}
    with served.http() as http:
        for viewport in ("300,300", "32,32", "300,100", "1000,1000"):
            png = http.get(f"{rendered}?viewport={viewport}", headers={"Accept": "image/png"})
            assert png.status_code == 200, png.text
            shapes[viewport] = imagecodecs.png_decode(png.content).shape
        bad = http.get(f"{rendered}?viewport=0,10", headers={"Accept": "image/png"})
    assert shapes == {"300,300": (300, 300), "32,32": (32, 32), "300,100": (100, 100), "1000,1000": (512, 512)}
    assert bad.status_code == 400


def test_rendered_uses_the_instance_window_by_default(served: Served) -> None:
    path = served.ct.files[0]
    _sop, url = _frame_url(served, path)
    original = pydicom.dcmread(path)
    center, width = (
        float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)
        for v in (original.WindowCenter, original.WindowWidth)
    )
    hu = original.pixel_array * float(original.RescaleSlope) + float(original.RescaleIntercept)
    expected = np.clip(np.rint((((hu - (center - 0.5)) / (width - 1)) + 0.5) * 255), 0, 255).astype(np.uint8)
    with served.http() as http:
        png = http.get(url.replace("/frames/1", "/rendered"), headers={"Accept": "image/png"})
    np.testing.assert_array_equal(imagecodecs.png_decode(png.content), expected)


def test_default_frames_are_native_explicit_little_endian(served: Served) -> None:
    _sop, url = _frame_url(served, served.corpus["SC_rgb.dcm"])
    with served.http() as http:
        response = http.get(url)
    [(headers, body)] = split_multipart(response)
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={EXPLICIT_VR_LE}"
    assert body == pydicom.dcmread(served.corpus["SC_rgb.dcm"]).pixel_array.tobytes()


def test_rendered_level_and_viewport_pick_a_resolution(served: Served) -> None:
    _sop, url = _frame_url(served, served.ct.files[0])
    rendered = url.replace("/frames/1", "/rendered")
    with served.http() as http:
        level2 = http.get(rendered + "?level=2", headers={"Accept": "image/png"})
        viewport = http.get(rendered + "?viewport=200,200", headers={"Accept": "image/png"})
    assert imagecodecs.png_decode(level2.content).shape == (128, 128)
    assert imagecodecs.png_decode(viewport.content).shape == (200, 200)  # the level of 256 px, scaled to fit


@pytest.mark.parametrize("multipart", [True, False])
def test_reduced_level_of_a_frame_without_stored_levels_goes_decoded(served: Served, multipart: bool) -> None:
    # Lossy JPEG is kept as received, so it has no stored bytes of level 1: octet-stream with any syntax
    # answers the decoded level, and says so in its type, instead of failing once the body has started.
    sop, url = _frame_url(served, served.corpus["JPEG-lossy.dcm"])
    octet = 'application/octet-stream; transfer-syntax=*'
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*' if multipart else octet
    response = httpx.get(served.base + url, params={"level": 1}, headers={"Accept": accept}, timeout=30)
    assert response.status_code == 200, response.text
    expected = np.ascontiguousarray(served.archive.read_frame(sop, 0, 1)).tobytes()
    if multipart:
        [(headers, body)] = split_multipart(response)
        content_type = headers["content-type"]
    else:
        content_type, body = response.headers["content-type"], response.content
    assert content_type == f"application/octet-stream; transfer-syntax={EXPLICIT_VR_LE}"
    assert body == expected
