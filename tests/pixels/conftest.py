"""Fixtures of the pixel store tests: real frames from pydicom's test files."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from pixel_data import frames_of


@pytest.fixture(scope="session")
def ct_frames() -> npt.NDArray[np.generic]:
    return frames_of("CT_small.dcm")  # 1 x 128 x 128 int16


@pytest.fixture(scope="session")
def mr_frames() -> npt.NDArray[np.generic]:
    return frames_of("emri_small.dcm")  # 10 x 64 x 64 uint16


@pytest.fixture(scope="session")
def rgb_frames() -> npt.NDArray[np.generic]:
    return frames_of("SC_rgb_2frame.dcm")  # 2 x 100 x 100 x 3 uint8
