"""pynetdicom formats its event lines only when its logger would show them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from pynetdicom import _config as pynetdicom_config

from engine.net._event_logs import match_event_logging


@pytest.fixture()
def pynetdicom_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("pynetdicom")
    level, setting = logger.level, pynetdicom_config.LOG_HANDLER_LEVEL
    yield logger
    logger.setLevel(level)
    pynetdicom_config.LOG_HANDLER_LEVEL = setting


def test_handlers_are_left_out_when_the_logger_drops_their_lines(pynetdicom_logger: logging.Logger) -> None:
    pynetdicom_logger.setLevel(logging.WARNING)  # what the CLI sets
    match_event_logging()
    assert pynetdicom_config.LOG_HANDLER_LEVEL == "none"


def test_handlers_run_when_someone_wants_pynetdicoms_info_lines(pynetdicom_logger: logging.Logger) -> None:
    pynetdicom_logger.setLevel(logging.DEBUG)
    match_event_logging()
    assert pynetdicom_config.LOG_HANDLER_LEVEL == "standard"
