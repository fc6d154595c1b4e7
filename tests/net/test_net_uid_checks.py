"""pynetdicom's UID checks answered from memory give pynetdicom's answers, and still refuse bad UIDs."""

from __future__ import annotations

import pynetdicom.pdu_items
import pynetdicom.presentation
import pynetdicom.utils
import pytest
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)

from engine.net import _uid_checks
from engine.net._contexts import storage_sop_classes


@pytest.fixture(autouse=True)
def installed() -> None:
    _uid_checks.remember_uid_checks()


def test_pynetdicom_modules_use_the_remembered_check_and_installing_twice_changes_nothing() -> None:
    _uid_checks.remember_uid_checks()
    assert pynetdicom.pdu_items.set_uid is _uid_checks.set_uid
    assert pynetdicom.presentation.set_uid is _uid_checks.set_uid
    assert pynetdicom.utils.set_uid is not _uid_checks.set_uid  # pynetdicom's own stays what we call


# "1.2.3.04" and "1.2.abc" break PS3.5 9.1, which pynetdicom enforces only when told to: let through
@pytest.mark.parametrize("value", [CTImageStorage, str(CTImageStorage), CTImageStorage.encode() + b"\0", "1.2.3.04", "1.2.abc"])
def test_answers_are_pynetdicoms(value: str | bytes) -> None:
    expected = pynetdicom.utils.set_uid(value, "SOP Class UID")
    for _ in range(2):  # computed, then remembered
        got = _uid_checks.set_uid(value, "SOP Class UID")
        assert got == expected and type(got) is UID


def test_none_and_empty_follow_the_flags() -> None:
    assert _uid_checks.set_uid(None, "Transfer Syntax Name") is None
    with pytest.raises(ValueError, match="must not be an empty str"):
        _uid_checks.set_uid("", "Abstract Syntax Name", allow_empty=False)


@pytest.mark.parametrize("value", ["1." + "2" * 70, b"1.2.840." + b"9" * 64])  # over 64 characters
def test_a_bad_uid_is_refused_every_time(value: str | bytes) -> None:
    for _ in range(3):
        with pytest.raises(ValueError, match="Invalid 'Abstract Syntax Name' value"):
            _uid_checks.set_uid(value, "Abstract Syntax Name")


def test_an_association_request_decodes_as_without_the_memory() -> None:
    """A request like getscu's (every storage class, with an SCP role each) reads back the same."""
    request = A_ASSOCIATE()
    request.application_context_name = "1.2.840.10008.3.1.1.1"
    request.calling_ae_title = "GETSCU"
    request.called_ae_title = "PACS_ENGINE"
    contexts = [build_context(uid, [ExplicitVRLittleEndian, "1.2.840.10008.1.2"]) for uid in storage_sop_classes()[:120]]
    for number, context in enumerate(contexts):
        context.context_id = 2 * number + 1
    request.presentation_context_definition_list = contexts
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 16384
    roles = []
    for context in contexts:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = context.abstract_syntax
        role.scu_role, role.scp_role = False, True
        roles.append(role)
    request.user_information = [maximum, *roles]
    encoded = A_ASSOCIATE_RQ()
    encoded.from_primitive(request)
    data = encoded.encode()

    def decoded() -> tuple[list[tuple[str, list[str]]], list[str]]:
        pdu = A_ASSOCIATE_RQ()
        pdu.decode(data)
        primitive = pdu.to_primitive()
        proposed = [(cx.abstract_syntax, cx.transfer_syntax) for cx in primitive.presentation_context_definition_list]
        selected = [item.sop_class_uid for item in primitive.user_information if hasattr(item, "scp_role")]
        return proposed, selected

    remembered = decoded()
    hits = _uid_checks._remembered.cache_info().hits
    assert decoded() == remembered
    assert _uid_checks._remembered.cache_info().hits > hits + 240  # the second read was answered from memory
    for module in _uid_checks._MODULES:
        module.set_uid = pynetdicom.utils.set_uid  # type: ignore[attr-defined]
    try:
        assert decoded() == remembered
    finally:
        _uid_checks.remember_uid_checks()
    assert remembered[0][0] == (contexts[0].abstract_syntax, [ExplicitVRLittleEndian, "1.2.840.10008.1.2"])
