"""What the listener negotiates: the storage SOP classes and the transfer syntaxes it accepts, in preference order."""

from __future__ import annotations

import copy
from typing import Any

from pynetdicom import AllStoragePresentationContexts, register_uid
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from engine.types import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    HTJ2K,
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    IMPLICIT_VR_LE,
    JPEG2000,
    JPEG2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_EXTENDED,
    JPEG_LOSSLESS_P14,
    JPEG_LOSSLESS_SV1,
    JPEGLS_LOSSLESS,
    JPEGLS_NEAR_LOSSLESS,
    RLE_LOSSLESS,
)

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
# Patient Root and Study Root Query/Retrieve information models: FIND, MOVE, GET (PS3.4 C.6).
QUERY_RETRIEVE_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.2.1.1",
    "1.2.840.10008.5.1.4.1.2.1.2",
    "1.2.840.10008.5.1.4.1.2.1.3",
    "1.2.840.10008.5.1.4.1.2.2.1",
    "1.2.840.10008.5.1.4.1.2.2.2",
    "1.2.840.10008.5.1.4.1.2.2.3",
)

# pynetdicom picks, per presentation context, the first syntax of THIS list that the requestor proposed.
# Uncompressed first, explicit little endian leading (it keeps VRs and every peer speaks it); then the
# lossless compressed syntaxes; lossy ones last, so that a peer offering both never compresses lossily for
# us. Peers that propose one syntax per context (DCMTK, most modalities) get the one they chose.
ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    JPEGLS_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    HTJ2K_LOSSLESS,
    JPEG2000_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LOSSLESS_P14,
    RLE_LOSSLESS,
    JPEG_BASELINE,
    JPEG_EXTENDED,
    JPEGLS_NEAR_LOSSLESS,
    JPEG2000,
    HTJ2K,
)

# Composite storage SOP classes (PS3.6 Annex A) that pynetdicom does not route to its Storage Service:
# retired and trial classes still found in old archives, DICOS and DICONDE eddy current. They carry
# Study and Series like every composite IOD. Non-patient objects (hanging protocols, colour palettes,
# implant templates) and DICOMDIR are not accepted: the archive is organised by study and series.
EXTRA_STORAGE_CLASSES: tuple[tuple[str, str], ...] = (
    ("1.2.840.10008.5.1.4.1.1.3", "UltrasoundMultiFrameImageStorageRetired"),
    ("1.2.840.10008.5.1.4.1.1.5", "NuclearMedicineImageStorageRetired"),
    ("1.2.840.10008.5.1.4.1.1.6", "UltrasoundImageStorageRetired"),
    ("1.2.840.10008.5.1.4.1.1.8", "StandaloneOverlayStorage"),
    ("1.2.840.10008.5.1.4.1.1.9", "StandaloneCurveStorage"),
    ("1.2.840.10008.5.1.4.1.1.9.1", "WaveformStorageTrial"),
    ("1.2.840.10008.5.1.4.1.1.10", "StandaloneModalityLUTStorage"),
    ("1.2.840.10008.5.1.4.1.1.11", "StandaloneVOILUTStorage"),
    ("1.2.840.10008.5.1.4.1.1.12.3", "XRayAngiographicBiPlaneImageStorage"),
    ("1.2.840.10008.5.1.4.1.1.77.1", "VLImageStorageTrial"),
    ("1.2.840.10008.5.1.4.1.1.77.2", "VLMultiFrameImageStorageTrial"),
    ("1.2.840.10008.5.1.4.1.1.88.1", "TextSRStorageTrial"),
    ("1.2.840.10008.5.1.4.1.1.88.2", "AudioSRStorageTrial"),
    ("1.2.840.10008.5.1.4.1.1.88.3", "DetailSRStorageTrial"),
    ("1.2.840.10008.5.1.4.1.1.88.4", "ComprehensiveSRStorageTrial"),
    ("1.2.840.10008.5.1.4.1.1.129", "StandalonePETCurveStorage"),
    ("1.2.840.10008.5.1.4.1.1.501.1", "DICOSCTImageStorage"),
    ("1.2.840.10008.5.1.4.1.1.501.2.1", "DICOSDigitalXRayImageStorageForPresentation"),
    ("1.2.840.10008.5.1.4.1.1.501.2.2", "DICOSDigitalXRayImageStorageForProcessing"),
    ("1.2.840.10008.5.1.4.1.1.501.3", "DICOSThreatDetectionReportStorage"),
    ("1.2.840.10008.5.1.4.1.1.501.4", "DICOS2DAITStorage"),
    ("1.2.840.10008.5.1.4.1.1.501.5", "DICOS3DAITStorage"),
    ("1.2.840.10008.5.1.4.1.1.501.6", "DICOSQuadrupoleResonanceStorage"),
    ("1.2.840.10008.5.1.4.1.1.601.1", "EddyCurrentImageStorage"),
    ("1.2.840.10008.5.1.4.1.1.601.2", "EddyCurrentMultiFrameImageStorage"),
)


def _register_extra_storage_classes() -> None:
    # pynetdicom dispatches a C-STORE by the SOP class's service class; unknown classes would reach a
    # service that cannot store. register_uid is its documented way to add one (idempotent here).
    for uid, keyword in EXTRA_STORAGE_CLASSES:
        if uid_to_service_class(uid) is not StorageServiceClass:
            register_uid(uid, keyword, StorageServiceClass)


def storage_sop_classes() -> tuple[str, ...]:
    """Every storage SOP class UID the listener accepts: pynetdicom's storage classes plus the extras."""
    known = tuple(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
    extra = tuple(uid for uid, _ in EXTRA_STORAGE_CLASSES if uid not in known)
    return known + extra


def supported_contexts(query_retrieve: bool = False) -> list[PresentationContext]:
    """Presentation contexts for the SCP: Verification and every storage SOP class, each with our syntaxes.

    With `query_retrieve`, also the Patient and Study Root C-FIND / C-MOVE / C-GET models, and the storage
    contexts accept the SCP role a C-GET requestor proposes (PS3.7 D.3.3.4: its storage sub-operations
    run on the same association, with us as SCU).
    """
    _register_extra_storage_classes()
    uncompressed = [EXPLICIT_VR_LE, IMPLICIT_VR_LE, EXPLICIT_VR_BE]
    contexts = [build_context(VERIFICATION_SOP_CLASS, uncompressed)]
    for uid in storage_sop_classes():
        cx = build_context(uid, list(ACCEPTED_TRANSFER_SYNTAXES))
        if query_retrieve:
            cx.scu_role = True
            cx.scp_role = True
        contexts.append(cx)
    if query_retrieve:
        contexts.extend(build_context(uid, uncompressed) for uid in QUERY_RETRIEVE_SOP_CLASSES)
    return contexts


class SharedContexts(list[PresentationContext]):
    """The listener's supported contexts, with a cheap copy for each association.

    pynetdicom gives every incoming association its own deepcopy of the listener's contexts. For ours
    (202 contexts, 3,141 transfer syntaxes) that took 27 ms an association, idle, and most of the 40-50 ms
    an association took to set up (DCMTK and Orthanc accept in 6). A copy here is new PresentationContext
    objects with their own transfer syntax lists, which is all an association changes (the C-GET role
    negotiation reorders a list); the UIDs in them are immutable and shared.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        copies = []
        for context in self:
            duplicate = copy.copy(context)
            duplicate._transfer_syntax = list(context._transfer_syntax)  # pynetdicom 3.0's attribute
            copies.append(duplicate)
        return copies
