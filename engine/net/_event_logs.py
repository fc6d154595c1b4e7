"""Whether pynetdicom's own event handlers run: only when their lines can be seen.

pynetdicom binds handlers to every association that format each PDU and DIMSE message into info and
debug lines ("standard" handlers), whether or not its logger lets those lines through. The CLI keeps
the logger at warnings; formatting getscu's association request (120 contexts, with a search of every
role selection per context) took 13 ms of interpreter time an association, for nothing. pynetdicom's
"none" keeps its warnings and errors.
"""

from __future__ import annotations

import logging

from pynetdicom import _config as pynetdicom_config


def match_event_logging() -> None:
    """Bind pynetdicom's standard handlers to new associations only if its info lines are shown."""
    wanted = logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)
    pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if wanted else "none"
