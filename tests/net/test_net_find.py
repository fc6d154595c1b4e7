"""C-FIND SCP against DCMTK findscu: every matching rule, every level, both information models, cancel."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from net_helpers import serving

from engine.archive import Archive
from engine.index import IndexEntry
from engine.net._qr import FIND_BACKLOG
from engine.testing.corpus import pydicom_test_files_dir
from engine.testing.dcmtk import run_storescu
from engine.testing.series import SeriesFiles
from engine.types import InstanceRecord

pytestmark = pytest.mark.dcmtk

AE = "FIND_TEST"
CORPUS = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "OBXXXX1A.dcm", "SC_rgb.dcm", "color3d_jpeg_baseline.dcm",
          "emri_small.dcm")
_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    archive: Archive
    files: dict[str, Path]  # name -> file
    ct: SeriesFiles
    mr: SeriesFiles

    def header(self, name: str) -> pydicom.Dataset:
        return pydicom.dcmread(self.files[name], stop_before_pixels=True)


def corpus_file(name: str) -> Path:
    if name == "chrGerm.dcm":
        return pydicom_test_files_dir().parent / "charset_files" / name
    path = pydicom.data.get_testdata_file(name)
    assert path is not None, name
    return Path(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ct_series: SeriesFiles, mr_series: SeriesFiles) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("find")
    files = {name: corpus_file(name) for name in (*CORPUS, "chrGerm.dcm")}
    with serving(root / "archive", AE) as served:
        host, port = served.host, served.port
        done = run_storescu(host, port, [*ct_series.files, *mr_series.files, *files.values()], called_ae=AE)
        assert done.returncode == 0, done.stderr
        served.archive.wait_for_ingests()
        yield Server(host, port, served.archive, files, ct_series, mr_series)


def findscu(server: Server, tmp: Path, level: str, keys: Sequence[str], *, model: str = "-S",
            extra: Sequence[str] = (), calling: str = "FINDSCU", called: str = AE
            ) -> tuple[list[pydicom.Dataset], str]:
    """Run findscu; return the response identifiers (extracted with -X) and its debug output."""
    out = tmp / f"rsp{len(list(tmp.iterdir()))}"
    out.mkdir()
    args = [f"QueryRetrieveLevel={level}", *keys]
    command = ["findscu", "-d", model, "-aet", calling, "-aec", called, "-X", "-od", str(out), *extra,
               server.host, str(server.port)]
    for key in args:
        command += ["-k", key]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    log = done.stdout + done.stderr
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))], log


def values(responses: list[pydicom.Dataset], keyword: str) -> list[str]:
    return sorted(str(r.get(keyword, "")) for r in responses)


@pytest.fixture
def find(server: Server, tmp_path: Path) -> Callable[..., list[pydicom.Dataset]]:
    def run(level: str, *keys: str, model: str = "-S") -> list[pydicom.Dataset]:
        responses, log = findscu(server, tmp_path, level, keys, model=model)
        statuses = [int(s, 16) for s in _STATUS.findall(log)]
        assert statuses and statuses[-1] == 0x0000, log[-2000:]
        assert all(s == 0xFF00 for s in statuses[:-1])
        return responses

    return run


def study_of(server: Server, *names: str) -> list[str]:
    return sorted(str(server.header(n).StudyInstanceUID) for n in names)


def test_single_value_and_case_rules(server: Server, find) -> None:
    assert values(find("STUDY", "PatientID=1CT1", "StudyInstanceUID"), "StudyInstanceUID") == study_of(server, "CT_small.dcm")
    assert find("STUDY", "PatientID=1ct1") == []  # LO matching is case-sensitive (PS3.4 C.2.2.2.1)
    # PN is matched case-insensitively, trailing empty components ignored (our conformance choice).
    assert values(find("STUDY", "PatientName=lestrade^g", "StudyInstanceUID"), "StudyInstanceUID") == study_of(
        server, "SC_rgb.dcm")
    assert values(find("STUDY", "PatientName=OB", "StudyInstanceUID"), "StudyInstanceUID") == study_of(
        server, "OBXXXX1A.dcm")


def test_keys_the_archive_cannot_match_are_ignored_with_status_ff01(server: Server, tmp_path: Path) -> None:
    """PS3.4 C.2.2.1.3 / C.4.1.1.4: an optional key not supported for matching does not empty the answer;
    the pending responses say it was not supported (FF01)."""
    study = study_of(server, "CT_small.dcm")[0]
    responses, log = findscu(server, tmp_path, "STUDY", [f"StudyInstanceUID={study}", "PatientComments=VIP"])
    statuses = [int(s, 16) for s in _STATUS.findall(log)]
    assert statuses == [0xFF01, 0x0000], log[-2000:]
    assert values(responses, "StudyInstanceUID") == [study]
    assert values(responses, "PatientComments") == [""]  # answered as a return key the archive does not keep


def test_wildcards(server: Server, find) -> None:
    compressed = values(find("STUDY", "PatientName=compressed*", "StudyInstanceUID"), "StudyInstanceUID")
    assert compressed == study_of(server, "CT_small.dcm", "MR_small.dcm")
    assert values(find("STUDY", "PatientID=?CT1", "StudyInstanceUID"), "StudyInstanceUID") == study_of(server, "CT_small.dcm")
    assert values(find("STUDY", "PatientID=*MR?", "StudyInstanceUID"), "StudyInstanceUID") == study_of(server, "MR_small.dcm")
    assert find("STUDY", "PatientID=?ct1") == []


def test_uid_list_and_universal(server: Server, find) -> None:
    wanted = study_of(server, "rtplan.dcm", "SC_rgb.dcm")
    found = find("STUDY", "StudyInstanceUID=" + "\\".join(wanted))
    assert values(found, "StudyInstanceUID") == wanted
    everything = find("STUDY", "StudyInstanceUID")
    expected = {str(server.header(n).StudyInstanceUID) for n in server.files} | {server.ct.study_uid}
    assert set(values(everything, "StudyInstanceUID")) == expected
    assert len(everything) == len(expected)


def studies_where(server: Server, keyword: str, accept: Callable[[str], bool]) -> list[str]:
    """Study UIDs whose `keyword` value `accept` takes: the first non-empty value sent of the study's instances,
    as the study record keeps it."""
    headers = [server.header(n) for n in server.files]
    headers += [pydicom.dcmread(p, stop_before_pixels=True) for p in (server.ct.files[0], server.mr.files[0])]
    value: dict[str, str] = {}
    for h in headers:
        if not value.get(str(h.StudyInstanceUID)):
            value[str(h.StudyInstanceUID)] = str(h.get(keyword, "") or "")
    return sorted(uid for uid, v in value.items() if accept(v))


def test_date_and_time_ranges(server: Server, find) -> None:
    def check(key: str, keyword: str, accept: Callable[[str], bool]) -> None:
        found = values(find("STUDY", key, "StudyInstanceUID"), "StudyInstanceUID")
        assert found == studies_where(server, keyword, accept), key
        assert found, key  # each range below selects something

    check("StudyDate=20040101-20041231", "StudyDate", lambda v: "20040101" <= v <= "20041231")
    check("StudyDate=-20031231", "StudyDate", lambda v: v != "" and v <= "20031231")
    check("StudyDate=20170101-", "StudyDate", lambda v: v >= "20170101")
    check("StudyDate=20040119", "StudyDate", lambda v: v == "20040119")
    check("StudyTime=1200-1300", "StudyTime", lambda v: v != "" and "120000" <= v.ljust(6, "0")[:6] <= "130000")


def test_study_level_computed_attributes_and_exact_keys(server: Server, find) -> None:
    (study,) = find("STUDY", f"StudyInstanceUID={server.ct.study_uid}", "ModalitiesInStudy",
                    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "PatientName", "StudyDescription")
    assert list(study.ModalitiesInStudy) == ["CT", "MR"]
    assert (study.NumberOfStudyRelatedSeries, study.NumberOfStudyRelatedInstances) == (
        2, len(server.ct.files) + len(server.mr.files))
    assert {e.keyword for e in study} == {
        "QueryRetrieveLevel", "RetrieveAETitle", "StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances", "PatientName", "StudyDescription"}
    assert study.RetrieveAETitle == AE
    mr = values(find("STUDY", "ModalitiesInStudy=MR", "StudyInstanceUID"), "StudyInstanceUID")
    assert mr == sorted([server.ct.study_uid, *study_of(server, "MR_small.dcm", "emri_small.dcm")])
    # Keys of lower levels match the series and instances below, and are no one instance's to answer.
    by_series = find("STUDY", "Modality=MR", "StudyInstanceUID", "SOPInstanceUID", "Rows")
    assert values(by_series, "StudyInstanceUID") == mr
    assert {(r.Modality, r.SOPInstanceUID, r.Rows) for r in by_series} == {("", "", None)}
    first_mr = pydicom.dcmread(server.mr.files[0], stop_before_pixels=True)
    assert values(find("STUDY", f"SOPInstanceUID={first_mr.SOPInstanceUID}", "StudyInstanceUID"),
                  "StudyInstanceUID") == [server.mr.study_uid]


def test_series_and_image_levels(server: Server, find) -> None:
    series = find("SERIES", f"StudyInstanceUID={server.ct.study_uid}", "SeriesInstanceUID", "Modality",
                  "NumberOfSeriesRelatedInstances")
    assert sorted((s.Modality, s.NumberOfSeriesRelatedInstances) for s in series) == [
        ("CT", len(server.ct.files)), ("MR", len(server.mr.files))]
    assert values(find("SERIES", "Modality=RTPLAN", "SeriesInstanceUID"), "SeriesInstanceUID") == [
        str(server.header("rtplan.dcm").SeriesInstanceUID)]
    images = find("IMAGE", f"StudyInstanceUID={server.mr.study_uid}", f"SeriesInstanceUID={server.mr.series_uid}",
                  "SOPInstanceUID", "InstanceNumber", "SOPClassUID")
    expected = sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in server.mr.files)
    assert values(images, "SOPInstanceUID") == expected
    assert sorted(int(i.InstanceNumber) for i in images) == list(range(1, len(server.mr.files) + 1))
    assert {e.keyword for e in images[0]} == {"QueryRetrieveLevel", "RetrieveAETitle", "StudyInstanceUID",
                                              "SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber", "SOPClassUID"}


def test_patient_root_model(server: Server, find) -> None:
    (patient,) = find("PATIENT", "PatientID=1CT1", "PatientName", "NumberOfPatientRelatedStudies",
                      "NumberOfPatientRelatedInstances", model="-P")
    assert (str(patient.PatientName), patient.NumberOfPatientRelatedStudies,
            patient.NumberOfPatientRelatedInstances) == ("CompressedSamples^CT1", 1, 1)
    studies = find("STUDY", "PatientID=1CT1", "StudyInstanceUID", model="-P")
    assert values(studies, "StudyInstanceUID") == study_of(server, "CT_small.dcm")
    assert {e.keyword for e in studies[0]} >= {"PatientID", "StudyInstanceUID"}  # unique keys of both levels
    series = find("SERIES", "PatientID=id00001", "SeriesInstanceUID", "Modality", model="-P")
    assert values(series, "Modality") == ["RTPLAN"]


def test_non_ascii_names_come_back_in_utf8(server: Server, find) -> None:
    (study,) = find("STUDY", "SpecificCharacterSet=ISO_IR 192", "PatientName=äneas*", "StudyInstanceUID")
    assert study.SpecificCharacterSet == "ISO_IR 192"
    assert str(study.PatientName) == "Äneas^Rüdiger"


def test_refusals_and_cancel(server: Server, tmp_path: Path) -> None:
    _, log = findscu(server, tmp_path, "FRAME", ["StudyInstanceUID"])
    assert [int(s, 16) for s in _STATUS.findall(log)][-1] == 0xA900, log[-2000:]
    _, log = findscu(server, tmp_path, "STUDY", ["StudyDate=yesterday"])
    assert [int(s, 16) for s in _STATUS.findall(log)][-1] == 0xA900, log[-2000:]


def test_cancel_stops_the_responses(start_listener, tmp_archive: Path, tmp_path: Path) -> None:
    # Thousands of matches, so the peer's C-CANCEL (sent after the first response) arrives long before the
    # last one would be sent. Header-only records go straight into the index: C-FIND never reads pixels.
    listener = start_listener(tmp_archive)
    header = corpus_file("CT_small.dcm").read_bytes()[:4000]
    study, series = "1.2.826.0.1.3680043.9.7.1", "1.2.826.0.1.3680043.9.7.1.1"
    entries = [
        IndexEntry(InstanceRecord(
            sop_instance_uid=f"{series}.{n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.88.11",
            study_instance_uid=study, series_instance_uid=series, transfer_syntax_uid="1.2.840.10008.1.2.1",
            received_bytes=4000, stored_bytes=1000, digest=f"{n:032x}", instance_number=n, pixel=None, codec=None,
            query={"PatientID": "CANCEL", "Modality": "SR", "InstanceNumber": str(n)}), header)
        for n in range(1, 3001)
    ]
    listener.archive.index.put_instances(entries)
    server = Server(listener.host, listener.port, listener.archive, {}, None, None)  # type: ignore[arg-type]
    responses, log = findscu(server, tmp_path, "IMAGE", [f"SeriesInstanceUID={series}", "SOPInstanceUID"],
                             extra=["--cancel", "1"], called=listener.ae_title)
    statuses = [int(s, 16) for s in _STATUS.findall(log)]
    assert statuses[-1] == 0xFE00, log[-2000:]
    # The archive lets the DUL reactor empty its queue every FIND_BACKLOG responses, so it reads the cancel
    # within a few dozen responses; it read it after 26 to 2018 of 3000 when responses were queued freely.
    assert 1 <= len(responses) <= 2 * FIND_BACKLOG + 1, len(responses)


def test_calling_ae_allow_list_covers_query_retrieve(start_listener, tmp_archive: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    listener = start_listener(tmp_archive, allowed_calling_aes=("FINDSCU",))
    server = Server(listener.host, listener.port, listener.archive, {}, None, None)  # type: ignore[arg-type]
    responses, log = findscu(server, tmp_path, "STUDY", ["StudyInstanceUID"], calling="INTRUDER",
                             called=listener.ae_title)
    assert responses == [] and "Association Rejected" in log, log[-2000:]
    with caplog.at_level("INFO", logger="engine.net"):
        _, log = findscu(server, tmp_path, "STUDY", ["StudyInstanceUID"], called=listener.ae_title)
        listener.server.stop()  # the association's log line is written when its connection closes
    assert [int(s, 16) for s in _STATUS.findall(log)] == [0x0000]
    assert any("FINDSCU" in r.message and "C-FIND 1" in r.message for r in caplog.records), caplog.text
