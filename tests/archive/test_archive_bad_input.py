"""Bad input is refused with a reason that says what is wrong, and the archive stays exactly as it was."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from engine.archive import Archive
from engine.errors import (
    CorruptDataError,
    DuplicateInstanceError,
    EngineError,
    InvalidDicomError,
    InvalidUIDError,
    PixelDataError,
    UnsupportedTransferSyntaxError,
)
from engine.testing.corpus import pydicom_data_dir, pydicom_test_files_dir


def _ct() -> Dataset:
    return pydicom.dcmread(pydicom_test_files_dir() / "CT_small.dcm")


def _save(ds: Dataset, *, enforce: bool = True) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=enforce)
    return out.getvalue()


def _with(**changes: object) -> bytes:
    ds = _ct()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return _save(ds)


def _wrong_pixel_length() -> bytes:
    ds = _ct()
    ds.PixelData = ds.PixelData[:-100]
    return _save(ds)


def _huge_image() -> bytes:
    ds = _ct()
    ds.Rows = 65535
    ds.Columns = 65535
    ds.NumberOfFrames = 100000
    return _save(ds)


def _unknown_syntax() -> bytes:
    ds = _ct()
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"
    data = bytearray(_save(ds, enforce=False))
    return bytes(data)


def _corrupt_compressed_frame() -> bytes:
    """A real JPEG-LS lossless file whose codestream has its middle replaced by garbage."""
    ds = pydicom.dcmread(pydicom_test_files_dir() / "MR_small_jpeg_ls_lossless.dcm")
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    broken = bytearray(frames[0])
    broken[40 : len(broken) - 40] = bytes(range(256)) * ((len(broken) - 80) // 256) + bytes((len(broken) - 80) % 256)
    ds.PixelData = encapsulate([bytes(broken)])
    return _save(ds)


def _garbage_lossy_frame() -> bytes:
    """A small JPEG baseline image (no lower levels to build) whose only fragment is not JPEG at all."""
    ds = pydicom.dcmread(pydicom_test_files_dir() / "SC_rgb_small_odd_jpeg.dcm")
    ds.PixelData = encapsulate([bytes(range(7, 251)) * 4])
    return _save(ds)


def _codestream_bigger_than_its_header() -> bytes:
    """A JPEG 2000 frame of 2048 x 2048 zeros (a few kB) in an instance that says 64 x 64: a small file must
    not make the archive allocate what the codestream claims before refusing it."""
    ds = pydicom.dcmread(pydicom_test_files_dir() / "MR_small_jp2klossless.dcm")
    bomb = imagecodecs.jpeg2k_encode(np.zeros((2048, 2048), dtype=np.int16), level=0, reversible=True)
    ds.PixelData = encapsulate([bytes(bomb)])
    return _save(ds)


def _ui(group: int, element: int, uid: str) -> bytes:
    """One explicit VR little endian UI element."""
    value = uid.encode() + b"\0" * (len(uid) % 2)
    return group.to_bytes(2, "little") + element.to_bytes(2, "little") + b"UI" + len(value).to_bytes(2, "little") + value


def _second_sop_instance_uid() -> bytes:
    """(0008,0018) twice, with two UIDs: readers would disagree on which instance this is."""
    data = _save(_ct())
    first = data.index(b"\x08\x00\x18\x00UI")
    end = first + 8 + int.from_bytes(data[first + 6 : first + 8], "little")
    return data[:end] + _ui(0x0008, 0x0018, "1.2.826.0.1.3680043.8.498.42") + data[end:]


def _file_meta_in_the_data_set() -> bytes:
    """A second Transfer Syntax UID (0002,0010) at the start of the data set, after the file meta information
    and outside its group length (tests/dicom checks the same in a data set received without file meta)."""
    data = _save(_ct())
    start = 132 + 12 + int.from_bytes(data[140:144], "little")  # after (0002,0000) and the group it counts
    return data[:start] + _ui(0x0002, 0x0010, "1.2.840.10008.1.2.2") + data[start:]


def _odd_pixel_data_length() -> bytes:
    """One byte more than the frame, so an odd length: up to a frame more is kept as the value's tail, but a
    value of odd length breaks PS3.5 7.1.1 and would go out again as it came."""
    data = bytearray(_save(_ct()))
    at = data.rindex(b"\xe0\x7f\x10\x00OW\x00\x00")
    length = int.from_bytes(data[at + 8 : at + 12], "little")
    data[at + 8 : at + 12] = (length + 1).to_bytes(4, "little")
    return bytes(data) + b"\x00"


def _cut_htj2k_frame() -> bytes:
    """CT_small as HTJ2K lossless, its codestream cut in half: OpenJPH decodes the half and only prints."""
    ds = _ct()
    ds.PixelData = encapsulate([bytes(imagecodecs.htj2k_encode(ds.pixel_array, reversible=True))[:2000]])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"
    return _save(ds)


def _cut_jpeg_lossless_frame() -> bytes:
    """pydicom-data's JPEG-LL.dcm (JPEG lossless SV1) cut to 60%: libjpeg-turbo fills the rest silently."""
    ds = pydicom.dcmread((pydicom_data_dir() or pydicom_test_files_dir()) / "JPEG-LL.dcm")
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) * 6 // 10]])
    return _save(ds)


def _truncated() -> bytes:
    data = (pydicom_data_dir() or pydicom_test_files_dir()).joinpath("693_UNCR.dcm").read_bytes()
    return data[: len(data) // 2]


CASES: dict[str, tuple[Callable[[], bytes], type[EngineError], str]] = {
    "truncated file": (_truncated, InvalidDicomError, ""),
    "wrong pixel data length": (_wrong_pixel_length, PixelDataError, "Pixel Data"),
    "missing SOP Instance UID": (lambda: _with(SOPInstanceUID=""), InvalidUIDError, "SOPInstanceUID"),
    "malformed Study UID": (lambda: _with(StudyInstanceUID="1.2.abc"), InvalidUIDError, "StudyInstanceUID"),
    "path traversal in SOP UID": (lambda: _with(SOPInstanceUID="../../etc/passwd"), InvalidUIDError, ""),
    "path traversal in Series UID": (lambda: _with(SeriesInstanceUID="1.2/../3"), InvalidUIDError, ""),
    "unknown transfer syntax": (_unknown_syntax, UnsupportedTransferSyntaxError, "1.2.3.4.5.6.7"),
    "huge declared image": (_huge_image, PixelDataError, ""),
    "corrupt compressed frame": (_corrupt_compressed_frame, EngineError, ""),
    "garbage lossy frame of a small image": (_garbage_lossy_frame, EngineError, "JPEG"),
    "codestream declaring more pixels than its header": (_codestream_bigger_than_its_header, EngineError,
                                                          "declares 2048 x 2048"),
    "not DICOM at all": (lambda: b"hello, this is not a DICOM file" * 10, InvalidDicomError, "DICM"),
    "odd pixel data length": (_odd_pixel_data_length, PixelDataError, "has an odd length of 32769 bytes"),
    "HTJ2K frame cut in half": (_cut_htj2k_frame, CorruptDataError, "does not end with the EOC marker"),
    "JPEG lossless frame cut short": (_cut_jpeg_lossless_frame, CorruptDataError, "does not end with the EOI marker"),
    "a second SOP Instance UID": (_second_sop_instance_uid, InvalidDicomError,
                                  "element (0008,0018) at offset"),
    "file meta element in the data set": (_file_meta_in_the_data_set, InvalidDicomError,
                                          "file meta element (0002,0010) at offset 336 is there twice"),
}


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    with Archive.open(tmp_path / "archive") as a:
        # Something good stored first: it must survive every refusal intact.
        a.ingest((pydicom_data_dir() or pydicom_test_files_dir()).joinpath("693_UNCR.dcm").read_bytes())
        yield a


@pytest.mark.parametrize("how", ["ingest", "accept"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_and_nothing_changes(archive: Archive, case: str, how: str) -> None:
    make, error, says = CASES[case]
    data = make()
    before = archive.stats()
    good = archive.study_uids()
    stored_sop = archive.instance_uids(archive.series_uids(good[0])[0])[0]
    good_copy = archive.read_instance(stored_sop)
    with pytest.raises(error) as info:
        getattr(archive, how)(data)
    assert str(info.value).strip(), "the refusal says why"
    if says:
        assert says in str(info.value)
    archive.wait_for_ingests()
    assert archive.stats() == before
    assert archive.read_instance(stored_sop) == good_copy
    assert archive.verify(deep=True) == []


def test_same_uid_different_content_is_refused_unless_overwrite(tmp_path: Path) -> None:
    first = _ct()
    second = _ct()
    second.PatientName = "Other^Person"
    with Archive.open(tmp_path / "a") as archive:
        archive.ingest(_save(first))
        assert archive.ingest(_save(first)).status == "duplicate"
        with pytest.raises(DuplicateInstanceError, match="^a different instance with this SOP Instance UID is stored"):
            archive.ingest(_save(second))
        assert archive.verify(deep=True) == []
    with Archive.open(tmp_path / "a", storage={"overwrite": True}) as archive:
        result = archive.ingest(_save(second))
        assert result.status == "replaced"
        back = pydicom.dcmread(io.BytesIO(archive.read_instance(result.sop_instance_uid)))
        assert back.PatientName == "Other^Person"
        assert archive.stats().instances == 1
        assert archive.verify(deep=True) == []


@pytest.mark.parametrize("how", ["ingest", "accept"])
def test_the_same_instance_in_another_syntax_is_a_duplicate(tmp_path: Path, how: str) -> None:
    """pydicom's MR_small in seven encodings is one instance: sent again in another syntax (an SCU may
    negotiate another), it is a no-op success, not 'a different instance' (it was refused so). Another
    value in its header, or other pixels, still makes it a different one."""
    files = pydicom_test_files_dir()
    encodings = ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_RLE.dcm",
                 "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
    with Archive.open(tmp_path / "a") as archive:
        archive.ingest((files / "MR_small.dcm").read_bytes())
        kept = archive.read_instance(_sop(files / "MR_small.dcm"))
        for name in encodings:
            raw = (files / name).read_bytes()
            if how == "accept":  # a C-STORE's data set and the syntax of its context
                meta = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).file_meta
                result = archive.accept(raw[132 + 12 + int(meta.FileMetaInformationGroupLength):],
                                        str(meta.TransferSyntaxUID))
            else:
                result = archive.ingest(raw)
            assert result.status == "duplicate", name
        other = pydicom.dcmread(files / "MR_small_implicit.dcm")
        other.PatientName = "Other^Person"
        with pytest.raises(DuplicateInstanceError):
            archive.ingest(_save(other))
        other = pydicom.dcmread(files / "MR_small_bigendian.dcm")
        other.PixelData = other.PixelData[:-2] + b"\x00\x01"
        with pytest.raises(DuplicateInstanceError):
            archive.ingest(_save(other))
        archive.wait_for_ingests()
        assert archive.read_instance(_sop(files / "MR_small.dcm")) == kept
        assert archive.stats().instances == 1 and archive.verify(deep=True) == []


@pytest.mark.parametrize("how", ["ingest", "accept"])
def test_an_instance_whose_series_is_another_studys_is_refused_before_it_is_acknowledged(
    tmp_path: Path, how: str
) -> None:
    """A series belongs to one study. Such an instance was acknowledged by C-STORE, then refused by the
    index at every commit, tried again for ever and found by no query of its study; import said only
    "index refused ...: rejected"."""
    first = _ct()
    moved = _ct()
    moved.SOPInstanceUID = moved.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.6001"
    moved.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.6002"
    with Archive.open(tmp_path / "a") as archive:
        archive.ingest(_save(first))
        before = archive.stats()
        with pytest.raises(InvalidUIDError, match=f"^its series is another study's: series {first.SeriesInstanceUID} "
                                                  f"belongs to study {first.StudyInstanceUID}, instance "
                                                  "1.2.826.0.1.3680043.8.498.6001 names study"):
            getattr(archive, how)(_save(moved))
        archive.wait_for_ingests()
        assert archive.stats() == before and archive.verify(deep=True) == []


@pytest.mark.parametrize("how", ["ingest", "accept"])
def test_a_replacement_of_a_series_only_instance_may_move_it_to_another_study(tmp_path: Path, how: str) -> None:
    """With overwrite on, the one exception to the rule above: the series goes with its only instance."""
    first = _ct()
    moved = _ct()
    moved.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.6002"
    with Archive.open(tmp_path / "a", storage={"overwrite": True}) as archive:
        archive.ingest(_save(first))
        assert getattr(archive, how)(_save(moved)).status == "replaced"
        archive.wait_for_ingests()
        assert archive.study_uids() == ["1.2.826.0.1.3680043.8.498.6002"]
        assert archive.verify(deep=True) == []


_BOMB = """
import io, sys
import imagecodecs, numpy as np, pydicom
from pydicom.encaps import encapsulate
from engine.archive import Archive
from engine.testing.corpus import pydicom_test_files_dir
ds = pydicom.dcmread(pydicom_test_files_dir() / "MR_small_jpeg_ls_lossless.dcm")
ds.Rows = ds.Columns = 4096
ds.NumberOfFrames = 24
ds.PixelRepresentation = 0
ds.PixelData = encapsulate([bytes(imagecodecs.jpegls_encode(np.zeros((4096, 4096), dtype=np.uint16)))] * 24)
out = io.BytesIO()
ds.save_as(out, enforce_file_format=True)
with Archive.open(sys.argv[1]) as archive:
    status = archive.ingest(out.getvalue()).status
    problems = archive.verify(deep=True)
# VmHWM, not ru_maxrss: a child forked from a big parent inherits the parent's ru_maxrss across exec
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(len(out.getvalue()), status, problems, peak_kib // 1024)
"""


def test_a_small_file_that_decodes_to_gigabytes_is_read_a_frame_at_a_time(tmp_path: Path) -> None:
    """24 JPEG-LS frames of 4096 x 4096 zeros: 20 kB that decode to 768 MiB. Every frame was decoded before
    any was encoded, so a few such files from a hostile peer took the machine's memory (78 kB held
    4.3 GB). Ingest and `verify --deep` now hold a frame at a time. Own process: its peak is this alone
    (measured as VmHWM, which a new program starts afresh)."""
    done = subprocess.run([sys.executable, "-c", _BOMB, str(tmp_path / "a")], capture_output=True, text=True,
                          check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    size, status, problems, peak_mib = done.stdout.split(maxsplit=3)
    assert int(size) < 30_000 and status == "stored" and problems.strip() == "[]"
    assert int(peak_mib) < 384, f"peak RSS {peak_mib} MiB for 768 MiB of decoded frames"


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.mark.parametrize("how", ["ingest", "accept"])
def test_pixels_the_profile_codec_cannot_take_are_kept_with_zstd(tmp_path: Path, how: str) -> None:
    """CharLS fails on 16-bit noise (its output buffer is too small): the instance is valid, so it is kept
    losslessly with the general-purpose codec, by import and by the network path alike, never refused."""
    ds = _ct()
    noise = np.random.default_rng(7).integers(0, 1 << 16, size=(ds.Rows, ds.Columns), dtype=np.uint16)
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 16, 15
    ds.PixelData = noise.tobytes()
    data = _save(ds)
    with Archive.open(tmp_path / "archive", storage={"profile": "jpegls"}) as archive:
        getattr(archive, how)(data)
        archive.wait_for_ingests()
        sop = str(ds.SOPInstanceUID)
        assert archive.record(sop).codec == "zstd"
        assert np.array_equal(archive.read_frame(sop, 0), noise)  # frames stay readable one by one
        back = pydicom.dcmread(io.BytesIO(archive.read_instance(sop)))
        assert back.PixelData == ds.PixelData
        assert archive.verify(deep=True) == []
