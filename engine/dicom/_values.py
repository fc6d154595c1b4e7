"""Decoding the few element values the engine needs (query keys, UIDs, pixel module) from raw bytes."""

from __future__ import annotations

import logging
import struct

from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from engine.errors import InvalidDicomError

from ._scan import ScanResult

LOGGER = logging.getLogger(__name__)

SPECIFIC_CHARACTER_SET = 0x00080005

# keyword -> (tag, dictionary VR) of every value kept in ParsedInstance.query.
QUERY_ELEMENTS: dict[str, tuple[int, str]] = {
    "SpecificCharacterSet": (0x00080005, "CS"),
    "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "StudyDate": (0x00080020, "DA"),
    "SeriesDate": (0x00080021, "DA"),
    "AcquisitionDate": (0x00080022, "DA"),
    "ContentDate": (0x00080023, "DA"),
    "StudyTime": (0x00080030, "TM"),
    "SeriesTime": (0x00080031, "TM"),
    "ContentTime": (0x00080033, "TM"),
    "AccessionNumber": (0x00080050, "SH"),
    "Modality": (0x00080060, "CS"),
    "Manufacturer": (0x00080070, "LO"),
    "InstitutionName": (0x00080080, "LO"),
    "ReferringPhysicianName": (0x00080090, "PN"),
    "TimezoneOffsetFromUTC": (0x00080201, "SH"),
    "StationName": (0x00081010, "SH"),
    "StudyDescription": (0x00081030, "LO"),
    "SeriesDescription": (0x0008103E, "LO"),
    "InstitutionalDepartmentName": (0x00081040, "LO"),
    "PerformingPhysicianName": (0x00081050, "PN"),
    "ManufacturerModelName": (0x00081090, "LO"),
    "PatientName": (0x00100010, "PN"),
    "PatientID": (0x00100020, "LO"),
    "IssuerOfPatientID": (0x00100021, "LO"),
    "PatientBirthDate": (0x00100030, "DA"),
    "PatientSex": (0x00100040, "CS"),
    "PatientAge": (0x00101010, "AS"),
    "BodyPartExamined": (0x00180015, "CS"),
    "ProtocolName": (0x00181030, "LO"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "StudyID": (0x00200010, "SH"),
    "SeriesNumber": (0x00200011, "IS"),
    "AcquisitionNumber": (0x00200012, "IS"),
    "InstanceNumber": (0x00200013, "IS"),
    "FrameOfReferenceUID": (0x00200052, "UI"),
    "Laterality": (0x00200060, "CS"),
    "NumberOfFrames": (0x00280008, "IS"),
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "BitsAllocated": (0x00280100, "US"),
    "PerformedProcedureStepStartDate": (0x00400244, "DA"),
}

# Pixel module attributes read as integers: keyword -> (tag, dictionary VR).
PIXEL_ELEMENTS: dict[str, tuple[int, str]] = {
    "SamplesPerPixel": (0x00280002, "US"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "PlanarConfiguration": (0x00280006, "US"),
    "NumberOfFrames": (0x00280008, "IS"),
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "HighBit": (0x00280102, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "ExtendedOffsetTable": (0x7FE00001, "OV"),
}

WANTED_TAGS = frozenset(t for t, _ in QUERY_ELEMENTS.values()) | frozenset(
    t for t, _ in PIXEL_ELEMENTS.values()
)
_TAG_VR = {tag: vr for tag, vr in (*QUERY_ELEMENTS.values(), *PIXEL_ELEMENTS.values())}
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})  # the VRs Specific Character Set applies to
_LEADING_SPACE_SIGNIFICANT = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})


class ValueReader:
    """Decodes values of scanned elements of one data set buffer."""

    __slots__ = ("buf", "scan", "little", "implicit", "_charset")

    def __init__(self, buf: bytes | memoryview, scan: ScanResult, implicit: bool, little: bool) -> None:
        self.buf = buf
        self.scan = scan
        self.little = little
        self.implicit = implicit
        self._charset: list[str] = []
        raw = self.raw(SPECIFIC_CHARACTER_SET)
        if raw:
            terms = raw.decode("ascii", "replace").split("\\")
            self._charset = [t.strip(" \x00") for t in terms]

    def raw(self, tag: int) -> bytes | None:
        """The value bytes of a scanned element, None if absent."""
        found = self.scan.elements.get(tag)
        if found is None:
            return None
        _, offset, length = found
        return bytes(self.buf[offset : offset + length])

    def text(self, tag: int) -> str | None:
        """The value of a string element as str (multiple values joined by backslash), None if absent."""
        raw = self.raw(tag)
        if raw is None:
            return None
        vr = _TAG_VR[tag]
        if vr in _TEXT_VRS and (max(raw, default=0) > 0x7F or 0x1B in raw):
            value = self._decode_with_charset(tag, vr, raw)
        else:
            value = raw.decode("latin-1")
        if vr == "UI":
            return value.rstrip("\x00 ")
        if vr in _LEADING_SPACE_SIGNIFICANT:
            return value.rstrip("\x00 ")
        return value.strip("\x00 ")

    def integer(self, tag: int, what: str) -> int | None:
        """An US or IS value as int, None if absent or empty. Raises InvalidDicomError if malformed."""
        vr = _TAG_VR[tag]
        if vr == "US":
            raw = self.raw(tag)
            if not raw:
                return None
            if len(raw) != 2:
                raise InvalidDicomError(
                    f"{what} ({tag >> 16:04X},{tag & 0xFFFF:04X}) is {len(raw)} bytes, not 2"
                )
            result: int = struct.unpack("<H" if self.little else ">H", raw)[0]
            return result
        text = self.text(tag)
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise InvalidDicomError(
                f"{what} ({tag >> 16:04X},{tag & 0xFFFF:04X}) is {text[:40]!r}, not an integer"
            ) from None

    @property
    def charset(self) -> list[str]:
        return self._charset

    def _decode_with_charset(self, tag: int, vr: str, raw: bytes) -> str:
        raw_element = RawDataElement(Tag(tag), vr, len(raw), raw, 0, self.implicit, self.little)
        encodings = convert_encodings(self._charset or ["ISO_IR 6"])
        element = convert_raw_data_element(raw_element, encoding=encodings)
        value = element.value
        if isinstance(value, (MultiValue, list)):
            return "\\".join(str(v) for v in value)
        return str(value)


def query_values(reader: ValueReader) -> dict[str, str]:
    """keyword -> string value of every query element present (empty values kept as "")."""
    query: dict[str, str] = {}
    for keyword, (tag, vr) in QUERY_ELEMENTS.items():
        if tag not in reader.scan.elements:
            continue
        if vr == "US":
            value = reader.integer(tag, keyword)
            query[keyword] = "" if value is None else str(value)
        else:
            query[keyword] = reader.text(tag) or ""
    return query
