"""`pacs-engine echo / send / find / get / move` against a DCMTK storescp and a second `pacs-engine serve`."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from engine.archive import Archive
from engine.testing.dcmtk import LOOPBACK, StoreSCP, free_port
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
    assert run.code == 1 and "0xA801" in run.err

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
