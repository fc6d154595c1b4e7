"""Deleting studies, series and instances: gone from every query and from disk, the rest untouched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from engine.archive import Archive, DeletionDisabledError
from engine.errors import ClosedError, InvalidUIDError, NotFoundError
from engine.index import find
from engine.testing.series import SeriesFiles, write_ct_series, write_mr_series

# Real files beside the CT series: a CT of another study, lossy JPEG kept as received, a header-only RT plan.
OTHERS = ("CT_small.dcm", "JPEG-lossy.dcm", "rtplan.dcm")


@dataclass(frozen=True, slots=True)
class Stocked:
    """A closed template archive and what it holds: SOP UID -> data set bytes as sent."""

    root: Path
    ct: SeriesFiles
    mr: SeriesFiles  # a second series in the CT's study
    sent: dict[str, bytes]
    files: dict[str, Path]  # SOP UID -> source file


def dataset_bytes(path: Path) -> tuple[str, bytes]:
    """(SOP Instance UID, the data set bytes after the file meta) of a Part-10 file."""
    data = path.read_bytes()
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.SOPInstanceUID), data[132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength) :]


def disk_bytes(root: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(root) for f in names)


@pytest.fixture(scope="module")
def stocked(tmp_path_factory: pytest.TempPathFactory, ct_series: SeriesFiles) -> Stocked:
    base = tmp_path_factory.mktemp("delete")
    mr = SeriesFiles.from_files(write_mr_series(base / "mr", 6, seed=3, study_uid=ct_series.study_uid))
    paths = [*ct_series.files, *mr.files, *(Path(get_testdata_file(name)) for name in OTHERS)]
    files = {dataset_bytes(p)[0]: p for p in paths}
    with Archive.open(base / "template") as archive:
        for path in paths:
            assert archive.ingest_file(path).status == "stored"
    return Stocked(base / "template", ct_series, mr, {sop: dataset_bytes(p)[1] for sop, p in files.items()}, files)


@pytest.fixture
def archive(stocked: Stocked, tmp_path: Path) -> Iterator[Archive]:
    shutil.copytree(stocked.root, tmp_path / "a")
    with Archive.open(tmp_path / "a", storage={"allow_delete": True}) as opened:
        yield opened


def sop_of(path: Path) -> str:
    return dataset_bytes(path)[0]


def assert_rest_intact(archive: Archive, stocked: Stocked, deleted: set[str]) -> None:
    """Every instance not deleted reads back byte-identical; every deleted one is absent everywhere."""
    assert set(archive.index.iter_instance_uids()) == set(stocked.sent) - deleted
    for sop, data in stocked.sent.items():
        if sop in deleted:
            with pytest.raises(NotFoundError):
                archive.record(sop)
            with pytest.raises(NotFoundError):
                archive.read_instance(sop)
        else:
            assert archive.read_dataset(sop)[1] == data, f"{sop} changed"
    images = {m["SOPInstanceUID"] for m in find(archive.index, "IMAGE", {"SOPInstanceUID": ""}, model="PATIENT")}
    assert images == set(stocked.sent) - deleted
    assert archive.verify(deep=True) == []
    # Nothing in the pixel store but what the index refers to.
    referenced = {(r.sop_instance_uid, r.generation) for r in map(archive.record, images) if r.codec is not None}
    assert set(archive.pixels.instance_dirs()) == referenced
    assert archive.pixels.temp_dirs() == []


def test_deletion_is_refused_unless_enabled(stocked: Stocked, tmp_path: Path) -> None:
    shutil.copytree(stocked.root, tmp_path / "a")
    sop = sop_of(stocked.ct.files[0])
    with Archive.open(tmp_path / "a") as archive:
        with pytest.raises(DeletionDisabledError, match="allow_delete"):
            archive.delete_instance(sop)
        with pytest.raises(DeletionDisabledError):
            archive.delete_study(stocked.ct.study_uid)
        assert archive.stats().instances == len(stocked.sent)
        assert archive.read_dataset(sop)[1] == stocked.sent[sop]
    with Archive.open(tmp_path / "a", readonly=True) as reader, pytest.raises(ClosedError, match="open for writing"):
        reader.delete_instance(sop)


def test_delete_instance(archive: Archive, stocked: Stocked) -> None:
    sop = sop_of(stocked.ct.files[5])
    record = archive.record(sop)
    before, disk_before = archive.stats(), disk_bytes(archive.pixels.root)
    series_before = archive.index.series_record(stocked.ct.series_uid)
    sequence = archive.index.last_sequence()

    result = archive.delete_instance(sop)

    assert (result.level, result.uid, result.sop_instance_uids) == ("instance", sop, (sop,))
    assert (result.series, result.studies, result.patients) == (0, 0, 0)
    assert (result.received_bytes, result.stored_bytes) == (record.received_bytes, record.stored_bytes)
    after = archive.stats()
    assert after.instances == before.instances - 1
    assert after.stored_bytes == before.stored_bytes - result.stored_bytes
    assert after.received_bytes == before.received_bytes - result.received_bytes
    # The pixel shard is gone from disk: what the result says was reclaimed, and at least the chunks.
    assert result.reclaimed_bytes >= sum(ref.length for level in record.levels for ref in level.chunks)
    assert disk_bytes(archive.pixels.root) == disk_before - result.reclaimed_bytes
    assert not (archive.pixels.root / archive.pixels.instance_key(sop)).exists()
    series = archive.index.series_record(stocked.ct.series_uid)
    assert series.instance_count == series_before.instance_count - 1
    assert series.stored_bytes == series_before.stored_bytes - record.stored_bytes
    [found] = find(archive.index, "SERIES", {"SeriesInstanceUID": stocked.ct.series_uid})
    assert found["NumberOfSeriesRelatedInstances"] == len(stocked.ct.files) - 1
    [study] = find(archive.index, "STUDY", {"StudyInstanceUID": stocked.ct.study_uid})
    assert study["NumberOfStudyRelatedInstances"] == len(stocked.ct.files) + len(stocked.mr.files) - 1
    assert sop not in archive.instance_uids(stocked.ct.series_uid)
    [change] = archive.index.changes(since=sequence)
    assert (change.op, change.sop_instance_uid, change.sequence) == ("delete", sop, result.last_sequence)
    with pytest.raises(NotFoundError):
        archive.delete_instance(sop)
    assert_rest_intact(archive, stocked, {sop})


def test_delete_series_keeps_the_rest_of_its_study(archive: Archive, stocked: Stocked) -> None:
    mr_sops = [sop_of(p) for p in stocked.mr.files]
    [study] = find(archive.index, "STUDY", {"StudyInstanceUID": stocked.ct.study_uid})
    assert study["ModalitiesInStudy"] == "CT\\MR"
    sequence = archive.index.last_sequence()

    result = archive.delete_series(stocked.mr.series_uid)

    assert result.sop_instance_uids == tuple(mr_sops)
    assert (result.instances, result.series, result.studies, result.patients) == (len(mr_sops), 1, 0, 0)
    assert archive.series_uids(stocked.ct.study_uid) == [stocked.ct.series_uid]
    [study] = find(archive.index, "STUDY", {"StudyInstanceUID": stocked.ct.study_uid})
    assert study["ModalitiesInStudy"] == "CT"
    assert study["NumberOfStudyRelatedSeries"] == 1
    assert study["NumberOfStudyRelatedInstances"] == len(stocked.ct.files)
    assert list(find(archive.index, "SERIES", {"Modality": "MR"})) == []
    assert list(find(archive.index, "SERIES", {"SeriesInstanceUID": stocked.mr.series_uid})) == []
    with pytest.raises(NotFoundError):
        archive.instance_uids(stocked.mr.series_uid)
    changes = archive.index.changes(since=sequence)
    assert [(c.op, c.sop_instance_uid) for c in changes] == [("delete", sop) for sop in mr_sops]
    assert_rest_intact(archive, stocked, set(mr_sops))


def test_delete_study(archive: Archive, stocked: Stocked) -> None:
    doomed = {sop_of(p) for p in (*stocked.ct.files, *stocked.mr.files)}
    before, disk_before = archive.stats(), disk_bytes(archive.pixels.root)
    patient = archive.record(next(iter(doomed))).query["PatientID"]

    result = archive.delete_study(stocked.ct.study_uid)

    assert set(result.sop_instance_uids) == doomed and result.instances == len(doomed)
    assert (result.series, result.studies) == (2, 1)
    after = archive.stats()
    assert (after.studies, after.series) == (before.studies - 1, before.series - 2)
    assert after.instances == before.instances - len(doomed)
    assert after.patients == before.patients - result.patients
    assert after.stored_bytes == before.stored_bytes - result.stored_bytes
    assert disk_bytes(archive.pixels.root) == disk_before - result.reclaimed_bytes
    assert stocked.ct.study_uid not in archive.study_uids()
    assert list(find(archive.index, "STUDY", {"StudyInstanceUID": stocked.ct.study_uid})) == []
    if result.patients:
        assert list(find(archive.index, "PATIENT", {"PatientID": patient}, model="PATIENT")) == []
    with pytest.raises(NotFoundError):
        archive.delete_study(stocked.ct.study_uid)
    assert_rest_intact(archive, stocked, doomed)


def test_header_only_and_passthrough_instances(archive: Archive, stocked: Stocked) -> None:
    plan = sop_of(Path(get_testdata_file("rtplan.dcm")))
    lossy = sop_of(Path(get_testdata_file("JPEG-lossy.dcm")))
    assert archive.record(plan).codec is None
    result = archive.delete_instance(plan)
    assert result.reclaimed_bytes == 0 and result.stored_bytes > 0  # its header was all it stored
    result = archive.delete_instance(lossy)
    assert result.reclaimed_bytes > 0
    assert_rest_intact(archive, stocked, {plan, lossy})


def test_unknown_misplaced_and_malformed_uids(archive: Archive, stocked: Stocked) -> None:
    sop = sop_of(stocked.ct.files[0])
    with pytest.raises(NotFoundError):
        archive.delete_study("1.2.3.4.5")
    with pytest.raises(NotFoundError):
        archive.delete_series("1.2.3.4.5")
    with pytest.raises(NotFoundError):
        archive.delete_instance("1.2.3.4.5")
    with pytest.raises(NotFoundError, match="not in study"):
        archive.delete("series", stocked.ct.series_uid, study_uid="1.2.3")
    with pytest.raises(NotFoundError, match="not in series"):
        archive.delete("instance", sop, study_uid=stocked.ct.study_uid, series_uid=stocked.mr.series_uid)
    with pytest.raises(InvalidUIDError):
        archive.delete_instance("../../etc")
    with pytest.raises(ValueError, match="levels: study, series, instance"):
        archive.delete("patient", "1.2.3")
    assert archive.stats().instances == len(stocked.sent)


def test_a_deleted_instance_can_be_stored_again(archive: Archive, stocked: Stocked) -> None:
    path = stocked.ct.files[3]
    sop = sop_of(path)
    archive.delete_instance(sop)
    assert archive.ingest_file(path).status == "stored"
    assert archive.record(sop).generation == 0
    assert archive.read_dataset(sop)[1] == stocked.sent[sop]
    assert_rest_intact(archive, stocked, set())


def test_deleting_instances_still_being_transcoded(tmp_path: Path, stocked: Stocked) -> None:
    """Accepted (journalled, not yet indexed) instances are waited for and deleted, and stay deleted."""
    with Archive.open(tmp_path / "a", storage={"allow_delete": True}) as archive:
        for path in stocked.ct.files[:8]:
            archive.accept(path.read_bytes())
        result = archive.delete_series(stocked.ct.series_uid)
        assert result.instances == 8
        assert archive.stats().instances == 0
    assert list((tmp_path / "a" / "journal").glob("*.journal")) == []
    with Archive.open(tmp_path / "a") as archive:
        assert archive.stats().instances == 0
        assert list(archive.pixels.instance_dirs()) == []


def test_a_crash_after_deleting_does_not_bring_journalled_instances_back(tmp_path: Path, stocked: Stocked) -> None:
    """The receive journal is replayed after a crash: records of deleted instances must be gone from it."""
    files = [str(p) for p in stocked.ct.files[:6]]
    script = textwrap.dedent(
        f"""
        import os, sys
        from engine.archive import Archive
        archive = Archive.open({str(tmp_path / "a")!r}, storage={{"allow_delete": True}})
        sops = [archive.accept(open(path, "rb").read()).sop_instance_uid for path in sys.argv[1:]]
        archive.wait_for_ingests()
        archive.delete_instance(sops[0])
        archive.delete_instance(sops[1])
        print("deleted", flush=True)
        os._exit(0)  # no close: the journal segment of this process is left behind
        """
    )
    command = [sys.executable, "-c", script, *files]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout.strip() == "deleted", done.stderr
    with Archive.open(tmp_path / "a") as archive:
        kept = {sop_of(Path(p)) for p in files[2:]}
        assert set(archive.index.iter_instance_uids()) == kept
        assert archive.verify(deep=True) == []
        for sop in kept:
            assert archive.read_dataset(sop)[1] == stocked.sent[sop]
        assert {sop for sop, _ in archive.pixels.instance_dirs()} == kept


def test_deleting_while_instances_arrive(archive: Archive, stocked: Stocked, tmp_path: Path) -> None:
    """Deletions and network receives of other instances run at once; each ends as if alone."""
    arriving = write_ct_series(tmp_path / "new", 10, rows=128, cols=128, seed=8, study_uid=stocked.ct.study_uid)
    doomed = [sop_of(p) for p in stocked.ct.files[:12]]
    failures: list[BaseException] = []

    def receive() -> None:
        try:
            for path in arriving:
                archive.accept(path.read_bytes())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    receiver = threading.Thread(target=receive)
    receiver.start()
    for sop in doomed:
        archive.delete_instance(sop)
    receiver.join()
    assert failures == []
    archive.wait_for_ingests()
    new = {sop_of(p): dataset_bytes(p)[1] for p in arriving}
    for sop, data in new.items():
        assert archive.read_dataset(sop)[1] == data
    grown = Stocked(stocked.root, stocked.ct, stocked.mr, {**stocked.sent, **new}, stocked.files)
    assert_rest_intact(archive, grown, set(doomed))
