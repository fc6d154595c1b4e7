"""Write the malformed-file corpus of tests/trust/malformed/ from real pydicom test files.

Each file is one named defect of the kind a broken modality, a bad converter or an attacker produces.
Run it again after changing a defect: `.venv/bin/python tests/trust/make_malformed.py`; the files are
committed so that the tests do not depend on how a future pydicom writes them.
"""

from __future__ import annotations

import io
import struct
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

OUT = Path(__file__).with_name("malformed")
PIXEL_TAG = b"\xe0\x7f\x10\x00"


def _read(name: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def _bytes(ds: Dataset, *, enforce: bool = True) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=enforce)
    return out.getvalue()


def _ct(defect: str) -> Dataset:
    """CT_small.dcm (explicit VR little endian, native 16-bit, 39 KB) with a SOP Instance UID of its own,
    so that no defect is refused as a conflicting duplicate of another instead of for itself.
    """
    ds = _read("CT_small.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[defect])
    return ds


def _meta_end(data: bytes) -> int:
    return 132 + 12 + struct.unpack_from("<I", data, 140)[0]


def truncated_header() -> bytes:
    """Cut inside the data set's header elements, well before the pixel data."""
    data = _bytes(_ct("truncated_header"))
    return data[: _meta_end(data) + 300]


def truncated_pixel_data() -> bytes:
    """Pixel Data declares 32 KB, the file ends after half of it."""
    data = _bytes(_ct("truncated_pixel_data"))
    return data[: data.index(PIXEL_TAG) + 12 + 16384]


def wrong_vr_length() -> bytes:
    """Rows (US, always 2 bytes) declared 6 bytes long: every element after it is misread."""
    data = bytearray(_bytes(_ct("wrong_vr_length")))
    at = data.index(b"\x28\x00\x10\x00US")
    struct.pack_into("<H", data, at + 6, 6)
    return bytes(data)


def length_past_end() -> bytes:
    """Patient's Name declares a 60000-byte value in a 39 KB file."""
    data = bytearray(_bytes(_ct("length_past_end")))
    at = data.index(b"\x10\x00\x10\x00PN")
    struct.pack_into("<H", data, at + 6, 60000)
    return bytes(data)


def bad_preamble() -> bytes:
    """The 'DICM' prefix at offset 128 is missing (the bytes say 'DICN')."""
    data = bytearray(_bytes(_ct("bad_preamble")))
    data[128:132] = b"DICN"
    return bytes(data)


def undefined_length_text() -> bytes:
    """Institution Name turned into UN of undefined length (a sequence, then) followed by no items."""
    ds = _ct("undefined_length_text")
    ds.InstitutionName = "X"
    data = bytearray(_bytes(ds))
    at = data.index(b"\x08\x00\x80\x00LO")
    # Explicit VR LO has a 2-byte length; widen it into the 4-byte-length form with an undefined length.
    data[at : at + 8 + 2] = b"\x08\x00\x80\x00UN\x00\x00\xff\xff\xff\xff"
    return bytes(data)


def unterminated_sequence() -> bytes:
    """A sequence of undefined length whose items never end: the file ends inside it."""
    data = bytearray(_bytes(_ct("unterminated_sequence")))
    at = data.index(PIXEL_TAG)
    opening = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    item = b"\x08\x00\x50\x11UI\x04\x001.2\x00"
    return bytes(data[:at]) + opening + item * 8


def unknown_transfer_syntax() -> bytes:
    """The file meta names transfer syntax 1.2.3.4.5.6.7, which no one defines."""
    ds = _ct("unknown_transfer_syntax")
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    return _bytes(ds, enforce=False)


def hostile_uid() -> bytes:
    """SOP Instance UID '../../../../etc/passwd': a UID used as a path must never climb out."""
    ds = _ct("hostile_uid")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "../../../../etc/passwd"
    return _bytes(ds, enforce=False)


def overlong_uid() -> bytes:
    """A Study Instance UID of 200 digits (the limit is 64)."""
    ds = _ct("overlong_uid")
    ds.StudyInstanceUID = "1." + "2" * 198
    return _bytes(ds, enforce=False)


def huge_rows_cols() -> bytes:
    """Rows and Columns 65535 and 100000 frames declared over 32 KB of pixel data."""
    ds = _ct("huge_rows_cols")
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 100000
    return _bytes(ds)


def bits_stored_over_allocated() -> bytes:
    """Bits Stored 24 in 16-bit samples."""
    ds = _ct("bits_stored_over_allocated")
    ds.BitsStored = 24
    ds.HighBit = 23
    return _bytes(ds)


def zero_bits_allocated() -> bytes:
    """Bits Allocated 0."""
    ds = _ct("zero_bits_allocated")
    ds.BitsAllocated = 0
    return _bytes(ds)


def missing_sop_instance_uid() -> bytes:
    """No SOP Instance UID in the data set."""
    ds = _ct("missing_sop_instance_uid")
    del ds.SOPInstanceUID
    return _bytes(ds, enforce=False)


def recursive_sequences() -> bytes:
    """Sequences nested 5000 deep, each in the one item of its parent."""
    return _write_deep(_nest_sequences(_ct("recursive_sequences")))


def recursive_sequences_implicit() -> bytes:
    """The same 5000-deep nesting in implicit VR, where only the item tags show that a value is a sequence."""
    ds = _ct("recursive_sequences_implicit")
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return _write_deep(_nest_sequences(ds))


def _nest_sequences(ds: Dataset, depth: int = 5000) -> Dataset:
    """`ds` with a Referenced Image Sequence nested `depth` deep, each level in the one item of its parent."""
    inner = Dataset()
    inner.CodeValue = "1"
    for _ in range(depth):
        outer = Dataset()
        outer.ReferencedImageSequence = Sequence([inner])
        inner = outer
    ds.ReferencedImageSequence = Sequence([inner])
    return ds


def _write_deep(ds: Dataset) -> bytes:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)  # pydicom writes nested sequences recursively
    try:
        return _bytes(ds)
    finally:
        sys.setrecursionlimit(limit)


def corrupt_jpeg_fragments() -> bytes:
    """Encapsulated JPEG-LS whose fragment item tags are overwritten: no Item, no Sequence Delimiter."""
    data = bytearray(_bytes(_read("MR_small_jpeg_ls_lossless.dcm")))
    at = data.index(PIXEL_TAG)
    first_item = data.index(b"\xfe\xff\x00\xe0", at)
    second_item = data.index(b"\xfe\xff\x00\xe0", first_item + 8)
    data[second_item : second_item + 4] = b"\x12\x34\x56\x78"
    return bytes(data)


def garbage_codestream() -> bytes:
    """Encapsulated JPEG-LS lossless whose codestream is replaced by noise of the same length."""
    ds = _read("MR_small_jpeg_ls_lossless.dcm")
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    noise = bytes((i * 7919 + 13) % 251 for i in range(len(frames[0])))
    ds.PixelData = encapsulate([frames[0][:4] + noise[4:]])
    return _bytes(ds)


def tolerated_meta_group_length_lies() -> bytes:
    """File Meta Information Group Length says 20 bytes; the group is ~200. Tolerated: the group is read
    by its tags, as pydicom and DCMTK do, and the data set after it is intact."""
    data = bytearray(_bytes(_ct("tolerated_meta_group_length_lies")))
    struct.pack_into("<I", data, 140, 20)
    return bytes(data)


def odd_length_pixel_data() -> bytes:
    """OW Pixel Data of odd length (one byte short of Rows x Columns x 2)."""
    ds = _ct("odd_length_pixel_data")
    data = bytearray(_bytes(ds))
    at = data.index(PIXEL_TAG)
    length = struct.unpack_from("<I", data, at + 8)[0]
    struct.pack_into("<I", data, at + 8, length - 1)
    return bytes(data[: at + 12 + length - 1])


def empty_file() -> bytes:
    """Zero bytes."""
    return b""


def only_file_meta() -> bytes:
    """A preamble and file meta, and no data set at all."""
    data = _bytes(_ct("only_file_meta"))
    return data[: _meta_end(data)]


def sop_class_missing() -> bytes:
    """No SOP Class UID anywhere (data set or file meta)."""
    ds = _ct("sop_class_missing")
    del ds.SOPClassUID
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    return _bytes(ds, enforce=False)


DEFECTS: dict[str, Callable[[], bytes]] = {
    fn.__name__: fn
    for fn in (
        truncated_header, truncated_pixel_data, wrong_vr_length, length_past_end, bad_preamble,
        undefined_length_text, unterminated_sequence, unknown_transfer_syntax, hostile_uid, overlong_uid,
        huge_rows_cols, bits_stored_over_allocated, zero_bits_allocated, missing_sop_instance_uid,
        recursive_sequences, recursive_sequences_implicit, corrupt_jpeg_fragments, garbage_codestream, tolerated_meta_group_length_lies,
        odd_length_pixel_data, empty_file, only_file_meta, sop_class_missing,
    )
}  # fmt: skip


def main() -> None:
    warnings.simplefilter("ignore")  # pydicom warns about the very defects being written
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.dcm"):
        old.unlink()
    for name, make in DEFECTS.items():
        data = make()
        (OUT / f"{name}.dcm").write_bytes(data)
        print(f"{name}.dcm: {len(data)} bytes: {(make.__doc__ or '').strip()}")


if __name__ == "__main__":
    main()
