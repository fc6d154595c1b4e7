"""The rendering helpers behind /rendered and /thumbnail (engine.codecs._render) on a real CT frame."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from engine import codecs


@pytest.fixture(scope="module")
def ct() -> np.ndarray:
    return np.asarray(pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array)


def test_linear_exact_and_monochrome1(ct: np.ndarray) -> None:
    exact = codecs.window_to_uint8(ct, center=1000, width=500, function="LINEAR_EXACT")
    expected = np.clip(np.rint(((ct - 1000.0) / 500 + 0.5) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(exact, expected)
    inverted = codecs.window_to_uint8(ct, center=1000, width=500, function="LINEAR_EXACT", invert=True)
    np.testing.assert_array_equal(inverted, 255 - expected)


def test_without_a_window_the_full_range_is_shown(ct: np.ndarray) -> None:
    image = codecs.window_to_uint8(ct)
    assert image.min() == 0 and image.max() == 255
    in_value_order = image.ravel()[np.argsort(ct.ravel(), kind="stable")].astype(int)
    assert np.all(np.diff(in_value_order) >= 0)  # the mapping is monotonic


def test_bad_windows_are_refused(ct: np.ndarray) -> None:
    with pytest.raises(ValueError, match="GAMMA"):
        codecs.window_to_uint8(ct, center=0, width=10, function="GAMMA")
    with pytest.raises(ValueError, match="below 1"):
        codecs.window_to_uint8(ct, center=0, width=0.5)


def test_png_is_lossless_and_jpeg_decodes(ct: np.ndarray) -> None:
    image = codecs.window_to_uint8(ct, center=1000, width=800)
    np.testing.assert_array_equal(imagecodecs.png_decode(codecs.encode_png(image)), image)
    rgb = np.stack([image, 255 - image, image // 2], axis=-1)
    np.testing.assert_array_equal(codecs.window_to_uint8(rgb), rgb)  # 8-bit colour passes through
    assert imagecodecs.jpeg8_decode(codecs.encode_jpeg(rgb, 95)).shape == rgb.shape


def test_ybr_full_frames_are_rendered_as_rgb() -> None:
    """Stored YBR samples become RGB for a picture: pydicom's conversion of a real YBR_FULL_422 image."""
    from pydicom.pixels import pixel_array

    ds = pydicom.dcmread(get_testdata_file("SC_ybr_full_422_uncompressed.dcm"))
    ybr = pixel_array(ds, as_rgb=False)
    rgb = codecs.ybr_full_to_rgb(ybr)
    assert np.abs(rgb.astype(int) - pixel_array(ds, as_rgb=True).astype(int)).max() <= 1


def test_sigmoid_window(ct: np.ndarray) -> None:
    """PS3.3 C.11.2.1.3.1: y = 255 / (1 + exp(-4 (x - c) / w)), computed here independently."""
    image = codecs.window_to_uint8(ct, center=1000, width=400, function="SIGMOID")
    expected = np.clip(np.rint(255.0 / (1.0 + np.exp(-4.0 * (ct - 1000.0) / 400))), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(image, expected)
