"""`pacs-engine echo / send / find / get / move` against a DCMTK storescp and a second `pacs-engine serve`."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from engine.archive import Archive
from engine.testing.dcmtk import LOOPBACK, QueryRetrieveSCP, StoreSCP, free_port
from engine.testing.series import SeriesFiles, write_mr_series
from engine.testing.server import ServerHandle, running_server

pytestmark = pytest.mark.dcmtk

CORPUS = ("CT_small.dcm", "SC_rgb.dcm", "color3d_jpeg_baseline.dcm", "JPEG2000.dcm")


def dataset_bytes(path: Path) -> tuple[str, bytes]:
    return dataset_bytes_of(path.read_bytes())


def dataset_bytes_of(raw: bytes) -> tuple[str, bytes]:
    meta = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).file_meta
    return str(meta.TransferSyntaxUID), raw[132 + 12 + int(meta.FileMetaInformationGroupLength):]


def sop_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def corpus() -> list[Path]:
    paths = [pydicom.data.get_testdata_file(n) for n in CORPUS]
    assert all(paths)
    return [Path(p) for p in paths if p]


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreSCP]:
    with StoreSCP(tmp_path_factory.mktemp("scu") / "storescp", ae_title="STORESCP") as scp:
        yield scp


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, mr_series: SeriesFiles, dest: StoreSCP) -> Iterator[ServerHandle]:
    """A second pacs-engine serve holding the MR series and the corpus files, knowing the storescp as STORESCP."""
    archive = tmp_path_factory.mktemp("remote") / "archive"
    with Archive.open(archive) as a:
        for path in [*mr_series.files, *corpus()]:
            a.ingest_file(path)
    (archive / "engine.toml").write_text(f'[remote_aes]\nSTORESCP = "{LOOPBACK}:{dest.port}"\n', encoding="utf-8")
    with running_server(archive, ae_title="REMOTE") as handle:
        yield handle


def peer(handle: ServerHandle) -> str:
    return f"{handle.ae_title}@{handle.host}:{handle.port}"


def test_echo(cli, tmp_archive: Path, dest: StoreSCP, remote: ServerHandle) -> None:
    for target in (f"STORESCP@{LOOPBACK}:{dest.port}", peer(remote)):
        run = cli(tmp_archive, "echo", target)
        assert run.code == 0 and "status 0x0000" in run.out, run.err
    run = cli(tmp_archive, "echo", f"NOBODY@{LOOPBACK}:{free_port()}")
    assert run.code == 1 and "NOBODY" in run.err
    with pytest.raises(SystemExit):
        cli(tmp_archive, "echo", "not-a-peer")


def test_send_files_arrive_byte_identical(cli, tmp_archive: Path, dest: StoreSCP, ct_series: SeriesFiles) -> None:
    files = [*ct_series.files[:5], *corpus()[:2]]  # the JPEG file is left for the move test
    before = set(dest.files())
    run = cli(tmp_archive, "send", *map(str, files), "--to", f"STORESCP@{LOOPBACK}:{dest.port}")
    assert run.code == 0, run.err
    assert f"sent {len(files)} instances" in run.out and "0 failed" in run.out
    arrived = {sop_of(p): p for p in set(dest.files()) - before}
    assert sorted(arrived) == sorted(sop_of(p) for p in files)
    for path in files:
        assert dataset_bytes(arrived[sop_of(path)]) == dataset_bytes(path), path.name


def test_send_deflated_and_implicit_vr_files(cli, tmp_archive: Path, dest: StoreSCP) -> None:
    """A deflated file goes deflated (it went inflated on the deflated context: unreadable); an implicit VR
    file goes in the syntax the peer picked from the uncompressed context (it failed: no context)."""
    files = [Path(pydicom.data.get_testdata_file(name)) for name in ("image_dfl.dcm", "MR_small_implicit.dcm")]
    before = set(dest.files())
    run = cli(tmp_archive, "send", *map(str, files), "--to", f"STORESCP@{LOOPBACK}:{dest.port}")
    assert run.code == 0 and "0 failed" in run.out, run.err
    arrived = {sop_of(p): p for p in set(dest.files()) - before}
    for path in files:
        got, sent = pydicom.dcmread(arrived[sop_of(path)]), pydicom.dcmread(path)
        assert got.file_meta.TransferSyntaxUID in (sent.file_meta.TransferSyntaxUID, "1.2.840.10008.1.2.1")
        assert got.PixelData == sent.PixelData and got.PatientName == sent.PatientName, path.name
    deflated = arrived[sop_of(files[0])]
    assert pydicom.dcmread(deflated).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"  # storescp +xa takes it


def test_find_table_and_json(cli, tmp_archive: Path, remote: ServerHandle, mr_series: SeriesFiles) -> None:
    run = cli(tmp_archive, "find", "--to", peer(remote), "-k", "PatientName=compressed*", "-k", "ModalitiesInStudy")
    assert run.code == 0, run.err
    assert run.out.splitlines()[0].split() == ["PatientName", "ModalitiesInStudy", "StudyInstanceUID"]
    run = cli(tmp_archive, "find", "--to", peer(remote), "--level", "series", "-k", "Modality=MR",
              "-k", "NumberOfSeriesRelatedInstances", "--json")
    assert run.code == 0, run.err
    (series,) = [s for s in run.json() if s["SeriesInstanceUID"] == mr_series.series_uid]
    assert series["NumberOfSeriesRelatedInstances"] == str(len(mr_series.files))
    with pytest.raises(SystemExit):
        cli(tmp_archive, "find", "--to", peer(remote), "--level", "frame")
    run = cli(tmp_archive, "find", "--to", peer(remote), "-k", "StudyDate=yesterday")
    assert run.code == 1 and "0xA900" in run.err  # the peer's refusal reaches the operator
    for wrong in ("InstanceNumber=1-3", "InstanceNumber=1?"):  # a traceback, before
        run = cli(tmp_archive, "find", "--to", peer(remote), "--level", "IMAGE", "-k", wrong)
        assert run.code == 1 and f"{wrong} does not fit its VR IS" in run.err, run.err


def test_get_pulls_into_this_archive(cli, tmp_archive: Path, remote: ServerHandle, mr_series: SeriesFiles) -> None:
    run = cli(tmp_archive, "get", "--from", peer(remote), "--level", "SERIES", "-k", "Modality=MR",
              "-k", f"StudyInstanceUID={mr_series.study_uid}")
    assert run.code == 0, run.err
    assert f"got {len(mr_series.files)} instances" in run.out and "0 failed" in run.out
    with Archive.open(tmp_archive, readonly=True) as archive:
        for path in mr_series.files:
            original = pydicom.dcmread(path)
            got = pydicom.dcmread(io.BytesIO(archive.read_instance(sop_of(path))))
            assert np.array_equal(got.pixel_array, original.pixel_array)  # lossless through the stored syntax
            assert got.PatientName == original.PatientName and got.InstanceNumber == original.InstanceNumber


def test_get_keeps_lossy_codestreams_as_they_were(cli, tmp_archive: Path, remote: ServerHandle) -> None:
    """Lossy JPEG 2000 is offered in its own context, so it arrives as received, not decoded."""
    lossy = corpus()[3]
    study = str(pydicom.dcmread(lossy, stop_before_pixels=True).StudyInstanceUID)
    run = cli(tmp_archive, "get", "--from", peer(remote), "--level", "STUDY", "-k", f"StudyInstanceUID={study}")
    assert run.code == 0 and "0 failed" in run.out, run.err
    with Archive.open(tmp_archive, readonly=True) as archive:
        assert archive.record(sop_of(lossy)).transfer_syntax_uid == "1.2.840.10008.1.2.4.91"
        got = io.BytesIO(archive.read_instance(sop_of(lossy)))
        assert dataset_bytes_of(got.getvalue()) == dataset_bytes(lossy)


def test_move_to_storescp_and_send_study_back(cli, tmp_archive: Path, remote: ServerHandle, dest: StoreSCP,
                                             mr_series: SeriesFiles) -> None:
    before = set(dest.files())
    jpeg = corpus()[2]
    patient = str(pydicom.dcmread(jpeg, stop_before_pixels=True).PatientID)
    run = cli(tmp_archive, "move", "--from", peer(remote), "--dest", "STORESCP", "-k", f"PatientID={patient}")
    assert run.code == 0, run.err
    assert "moved to STORESCP 1 instances" in run.out
    (arrived,) = set(dest.files()) - before
    assert dataset_bytes(arrived) == dataset_bytes(jpeg)  # lossy JPEG: its codestream is kept and sent as is
    run = cli(tmp_archive, "move", "--from", peer(remote), "--dest", "UNKNOWN", "-k",
              f"StudyInstanceUID={mr_series.study_uid}")
    assert run.code == 1 and "0xA801 (move destination unknown or unreachable)" in run.err, run.err

    # send --study: a study of a local archive to the remote, in the best syntax it accepts (the stored HTJ2K).
    local = tmp_archive.parent / "local"
    files = write_mr_series(tmp_archive.parent / "new", 3, rows=64, cols=64, seed=11)
    with Archive.open(local) as archive:
        for path in files:
            archive.ingest_file(path)
    study = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    run = cli(local, "send", "--study", study, "--to", peer(remote))
    assert run.code == 0 and "sent 3 instances" in run.out and "3 completed" in run.out, run.err
    run = cli(tmp_archive, "find", "--to", peer(remote), "--level", "IMAGE", "-k", f"StudyInstanceUID={study}", "--json")
    assert sorted(m["SOPInstanceUID"] for m in run.json()) == sorted(sop_of(p) for p in files)


def test_get_from_a_strict_hierarchical_archive(cli, tmp_archive: Path, ct_series: SeriesFiles, tmp_path: Path) -> None:
    """DCMTK dcmqrscp wants one UID of every level above the one retrieved (PS3.4 C.4.2.2.1): in Study Root a
    series by its study, an instance by its study and series. The identifiers carried PatientID instead,
    and the pull reported 0 instances and exit 0."""
    files = ct_series.files[:4]
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    with QueryRetrieveSCP(tmp_path / "dcmqrscp", files, ae_title="QR") as qr:
        source = f"QR@{LOOPBACK}:{qr.port}"
        run = cli(tmp_archive, "get", "--from", source, "--level", "SERIES", "-k", f"StudyInstanceUID={ct_series.study_uid}",
                  "-k", "Modality=CT")
        assert run.code == 0 and "got 4 instances" in run.out and "4 completed" in run.out, run.out + run.err
        run = cli(tmp_path / "second", "get", "--from", source, "--level", "IMAGE",
                  "-k", f"StudyInstanceUID={ct_series.study_uid}", "-k", f"SeriesInstanceUID={ct_series.series_uid}",
                  "-k", f"SOPInstanceUID={first.SOPInstanceUID}")
        assert run.code == 0 and "got 1 instances" in run.out, run.out + run.err
    with Archive.open(tmp_archive, readonly=True) as archive:
        for path in files:
            assert dataset_bytes_of(archive.read_instance(sop_of(path)))[1] == dataset_bytes(path)[1]


def test_get_and_move_of_nothing_fail(cli, tmp_archive: Path, remote: ServerHandle) -> None:
    """A pull that brings nothing is an error an operator's script must see, as is a wild card in a UID."""
    for command in (["get", "--from"], ["move", "--dest", "STORESCP", "--from"]):
        run = cli(tmp_archive, *command, peer(remote), "-k", "StudyInstanceUID=1.2.3.4.5.6")
        assert run.code == 1 and "retrieved no instances" in run.err, run.err
        run = cli(tmp_archive, *command, peer(remote), "-k", "PatientName=Nobody^Here")
        assert run.code == 1 and "nothing on REMOTE@" in run.err and "PatientName=Nobody^Here" in run.err, run.err
        run = cli(tmp_archive, *command, peer(remote), "-k", "StudyInstanceUID=*")
        assert run.code == 1 and "never with wild cards" in run.err, run.err


def test_send_two_files_with_one_sop_instance_uid(cli, tmp_archive: Path, remote: ServerHandle, tmp_path: Path) -> None:
    """Each file's own content goes: the second file's went out twice, and the first never left."""
    ds = pydicom.dcmread(corpus()[0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.5150"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.5151", "1.2.826.0.1.3680043.8.498.5152"
    paths = []
    for name in ("First^File", "Second^File"):
        ds.PatientName = name
        paths.append(tmp_path / f"{name}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    run = cli(tmp_archive, "send", *map(str, paths), "--to", peer(remote))
    assert run.code == 1 and "1 completed" in run.out and "1 failed" in run.out, run.out + run.err  # 0111 for the second
    run = cli(tmp_archive, "find", "--to", peer(remote), "--level", "IMAGE", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
              "-k", f"SOPInstanceUID={ds.SOPInstanceUID}", "-k", "PatientName", "--json")
    assert [m["PatientName"] for m in run.json()] == ["First^File"], run.out + run.err


def test_a_pull_cut_off_reports_what_it_kept(cli, tmp_archive: Path, ct_series: SeriesFiles, tmp_path: Path) -> None:
    """The source dies mid C-GET: the summary says what arrived (it printed only the error), the exit says
    it failed, and what arrived is kept and sound."""
    source = tmp_path / "source"
    with Archive.open(source) as archive:
        for path in ct_series.files:
            archive.ingest_file(path)
    with running_server(source, ae_title="DYING") as server:
        outcome: list[Any] = []
        pulling = threading.Thread(target=lambda: outcome.append(cli(
            tmp_archive, "get", "--from", peer(server), "-k", f"StudyInstanceUID={ct_series.study_uid}")))
        pulling.start()
        pixels = tmp_archive / "pixels"
        while pulling.is_alive() and len(list(pixels.glob("*/[0-9]*"))) < 3:  # three instances' groups
            pulling.join(0.001)
        server.kill()
        pulling.join(120)
    (run,) = outcome
    assert run.code == 1 and "error: the C-GET from DYING@" in run.err, run.out + run.err
    got = int(run.out.split(" completed")[0].rsplit(" ", 1)[1])
    assert 3 <= got < len(ct_series.files), run.out
    with Archive.open(tmp_archive, readonly=True) as archive:
        assert archive.stats().instances == got
        assert archive.verify() == []
