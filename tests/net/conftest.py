"""Fixtures of the listener tests: a real archive behind a DicomServer on an ephemeral loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from net_helpers import Listener, serving

AE_TITLE = "NET_TEST"


@pytest.fixture
def start_listener() -> Iterator[Callable[..., Listener]]:
    """start_listener(archive_dir, **dicom_settings) -> a started Listener; all stopped and closed at the end."""
    with ExitStack() as stack:
        yield lambda archive_dir, **dicom: stack.enter_context(serving(archive_dir, AE_TITLE, **dicom))


@pytest.fixture
def listener(start_listener: Callable[..., Listener], tmp_archive: Path) -> Listener:
    """A listener on a fresh archive."""
    return start_listener(tmp_archive)
