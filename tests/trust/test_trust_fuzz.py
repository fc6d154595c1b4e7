"""Fuzzing with a fixed budget: mutated real files through the parser, ingest and accept; mutated STOW-RS
bodies, random QIDO-RS parameters and frame lists through the DICOMweb application. Nothing may raise
outside the engine's error tree, answer 500, or change what was stored before.

PACS_FUZZ_EXAMPLES sets the examples per test (CI default 60); e.g. PACS_FUZZ_EXAMPLES=5000 for a long run.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from engine.archive import Archive
from engine.dicom import parse_part10
from engine.errors import EngineError
from engine.testing.crash import Source
from engine.testing.dcmtk import LOOPBACK
from engine.testing.series import write_ct_series
from engine.web import WebServer

EXAMPLES = int(os.environ.get("PACS_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("PACS_FUZZ_EXAMPLES") is None,  # CI: the same examples every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
# Real files covering explicit / implicit / big endian, sequences, native, encapsulated, deflate, no pixels.
FILES = [
    "CT_small.dcm", "MR_small_bigendian.dcm", "rtplan.dcm", "emri_small_jpeg_ls_lossless.dcm",
    "image_dfl.dcm", "test-SR.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "MR_small_implicit.dcm",
]  # fmt: skip
_DATA = {name: Path(get_testdata_file(name)).read_bytes() for name in FILES}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real file with one to three defects: byte flips, truncation, a corrupted length, inserted garbage."""
    data = bytearray(_DATA[draw(st.sampled_from(FILES))])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "length", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "length" and len(data) >= at + 4:
            # a plausible length field: what a 2- or 4-byte length right here would be overwritten with
            value = draw(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, len(data), draw(st.integers(0, 1 << 32 - 1))]))
            if draw(st.booleans()):
                struct.pack_into("<H", data, at, value & 0xFFFF)
            else:
                struct.pack_into("<I", data, at, value & 0xFFFFFFFF)
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


@FUZZ
@given(data=mutated())
def test_the_parser_refuses_or_parses_mutated_files(data: bytes) -> None:
    try:
        parsed = parse_part10(data)
    except EngineError as exc:
        assert str(exc).strip(), "a refusal says why"
        return
    assert parsed.sop_instance_uid and parsed.study_instance_uid


@pytest.fixture(scope="module")
def fuzz_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Archive, dict[str, bytes]]]:
    """An archive holding the unmutated files and a small CT series: what every mutation must leave alone."""
    root = tmp_path_factory.mktemp("fuzz")
    series = write_ct_series(root / "ct", 4, rows=128, cols=128, seed=31)
    with Archive.open(root / "archive") as archive:
        kept: dict[str, bytes] = {}
        for path in [*series, *(Path(get_testdata_file(n)) for n in FILES)]:
            source = Source.read(path)
            if source.sop_instance_uid in kept:
                continue  # MR_small_implicit.dcm is MR_small_bigendian.dcm in another encoding
            archive.ingest(path.read_bytes())
            kept[source.sop_instance_uid] = archive.read_dataset(source.sop_instance_uid)[1]
        yield archive, kept


@FUZZ
@given(data=mutated(), how=st.sampled_from(["ingest", "accept"]))
def test_ingest_of_mutated_files_refuses_or_stores_and_changes_nothing_else(
    fuzz_archive: tuple[Archive, dict[str, bytes]], data: bytes, how: str
) -> None:
    archive, kept = fuzz_archive
    try:
        result = getattr(archive, how)(data)
    except EngineError as exc:
        assert str(exc).strip()
        return
    # Acknowledged means stored: an accepted instance is in the index once its transcode ran.
    record = archive.record(result.sop_instance_uid)
    assert record.sop_instance_uid == result.sop_instance_uid
    if result.sop_instance_uid in kept:
        assert result.status == "duplicate"
        assert archive.read_dataset(result.sop_instance_uid)[1] == kept[result.sop_instance_uid]
    else:
        archive.read_instance(result.sop_instance_uid)  # readable, whatever it holds


def test_after_the_fuzzing_the_archive_verifies_and_the_originals_are_intact(
    fuzz_archive: tuple[Archive, dict[str, bytes]],
) -> None:
    archive, kept = fuzz_archive
    archive.wait_for_ingests()
    assert archive.verify(deep=True) == []
    for sop, dataset in kept.items():
        assert archive.read_dataset(sop)[1] == dataset


# -- DICOMweb -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def web(fuzz_archive: tuple[Archive, dict[str, bytes]]) -> Iterator[tuple[httpx.Client, list[tuple[str, str, str]]]]:
    """The real DICOMweb server on loopback in front of the fuzzed archive, and (study, series, sop) paths."""
    archive, kept = fuzz_archive
    paths = [(archive.record(sop).study_instance_uid, archive.record(sop).series_instance_uid, sop) for sop in kept]
    server = WebServer(archive, LOOPBACK, 0)
    host, port = server.start()
    try:
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=60) as client:
            yield client, paths
    finally:
        server.stop()


def _stow_body(boundary: str, parts: list[bytes], part_type: str) -> bytes:
    out = b""
    for part in parts:
        out += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


@st.composite
def stow_request(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(["b0undary", "x" * 70, "a" * 71, "", "with space", "--", draw(st.text(max_size=20))]))
    declared = draw(st.sampled_from([boundary, boundary + "x", boundary[:-1] or "q"]))
    parts = draw(st.lists(st.one_of(mutated(), st.sampled_from(list(_DATA.values())), st.binary(max_size=200)), max_size=3))
    part_type = draw(st.sampled_from(["application/dicom", "application/json", "", "application/dicom; x=\"1\""]))
    body = bytearray(_stow_body(boundary, parts, part_type))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "crlf"]))
        at = draw(st.integers(0, max(0, len(body) - 1)))
        if kind == "flip" and body:
            body[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del body[at:]
        elif kind == "insert":
            body[at:at] = draw(st.sampled_from([b"\r\n", b"--", f"--{boundary}".encode(), b"\r\n\r\n", b"\x00" * 9]))
        elif kind == "crlf":
            body = bytearray(bytes(body).replace(b"\r\n", b"\n", 1))
    content_type = draw(st.sampled_from([
        f'multipart/related; type="application/dicom"; boundary={declared}',
        f'multipart/related; type="application/dicom"; boundary="{declared}"',
        f"multipart/related; boundary={declared}",
        'multipart/related; type="application/dicom"',
        "application/dicom",
        f'multipart/related; type="application/dicom+json"; boundary={declared}',
        draw(st.text(max_size=60)),
    ]))  # fmt: skip
    return bytes(body), content_type


@FUZZ
@given(request=stow_request())
def test_stow_of_mutated_bodies_never_answers_500(
    web: tuple[httpx.Client, list[tuple[str, str, str]]], request: tuple[bytes, str]
) -> None:
    client, _ = web
    body, content_type = request
    try:
        response = client.post("/studies", content=body, headers={"content-type": content_type})
    except (UnicodeEncodeError, httpx.InvalidURL, httpx.LocalProtocolError):
        return  # the random header cannot even be sent
    assert response.status_code in (200, 202, 400, 409, 415), (response.status_code, response.text[:500])


_QIDO_KEYS = [
    "PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "Modality",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "00100010", "0020000D", "InstanceNumber",
    "SeriesNumber", "limit", "offset", "includefield", "fuzzymatching", "ReferencedSeriesSequence.Modality",
    "NoSuchKeyword", "", "Rows", "StudyDescription", "NumberOfStudyRelatedInstances",
]  # fmt: skip
_QIDO_VALUES = st.one_of(
    st.sampled_from(["*", "?", "A*", "*^*", "20010101-", "-20251231", "20010101-20000101", "2001", "0", "-1",
                     "99999999999999999999", "all", "true", "1.2.3", "1.2.*", "\\", "a\\b", "%", "'", "", " "]),
    st.text(max_size=30),
)  # fmt: skip


@FUZZ
@given(
    level=st.sampled_from(["/studies", "/series", "/instances", "STUDY/series", "STUDY/instances", "STUDYSERIES/instances"]),
    params=st.lists(st.tuples(st.sampled_from(_QIDO_KEYS) | st.text(max_size=12), _QIDO_VALUES), max_size=6),
)
def test_qido_with_random_parameters_never_answers_500(
    web: tuple[httpx.Client, list[tuple[str, str, str]]], level: str, params: list[tuple[str, str]]
) -> None:
    client, paths = web
    study, series, _ = paths[0]
    url = level.replace("STUDY", f"/studies/{study}").replace("SERIES", f"/series/{series}")
    response = client.get(url, params=params)
    assert response.status_code in (200, 204, 400), (url, params, response.status_code, response.text[:500])


@FUZZ
@given(
    which=st.integers(0, 100),
    frames=st.one_of(
        st.text(min_size=1, max_size=20),
        st.lists(st.integers(-5, 1 << 40), min_size=1, max_size=5).map(lambda xs: ",".join(map(str, xs))),
        st.sampled_from(["1", "1,1", "0", "1,", ",1", " 1", "1-2", "%2C", "1e3", "٣", "1" * 40, "1,2,3"]),
    ),
    accept=st.sampled_from([None, "*/*", "application/octet-stream", 'multipart/related; type="application/octet-stream"', "image/jpeg", "text/html"]),
)
def test_frame_lists_with_random_text_are_refused_or_served(
    web: tuple[httpx.Client, list[tuple[str, str, str]]], which: int, frames: str, accept: str | None
) -> None:
    client, paths = web
    study, series, sop = paths[which % len(paths)]
    headers = {"accept": accept} if accept else {}
    try:
        response = client.get(f"/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", headers=headers)
    except (UnicodeEncodeError, httpx.InvalidURL, httpx.LocalProtocolError):
        return  # not even a URL a client can send
    # 307: a list ending in "/" is redirected to the same path without it (Starlette), then answered as one
    assert response.status_code in (200, 206, 307, 400, 404, 406), (frames, accept, response.status_code, response.text[:500])
