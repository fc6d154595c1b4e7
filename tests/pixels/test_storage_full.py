"""A pixel store that runs out of space: a real 2 MiB tmpfs, so ENOSPC comes from the kernel."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from engine.errors import StorageFullError
from engine.pixels import LevelArray, LocalPixelStore
from engine.types import CODEC_ZSTD, ChunkRef

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def raw_level(frames: npt.NDArray[np.generic]) -> LevelArray:
    # uncompressed frames, ~100 KB an instance with its metadata pages: 2 MiB fills in about 20 writes
    return LevelArray(0, tuple(frames.shape), frames.dtype.str, CODEC_ZSTD, {}, [f.tobytes() for f in frames])


@pytest.mark.parametrize("sync", [True, False])
def test_enospc_leaves_no_trace(small_disk: Path, mr_frames: npt.NDArray[np.generic], sync: bool) -> None:
    store = LocalPixelStore(small_disk / "pixels")
    written: dict[str, tuple[ChunkRef, ...]] = {}
    with pytest.raises(StorageFullError) as caught:
        for n in range(50):
            uid = f"1.2.826.0.1.{n}"
            level = raw_level(np.roll(mr_frames, n, axis=2))
            written[uid] = store.write_instance(uid, [level], {}, sync=sync)[0]
            if not sync and n % 4 == 3:
                store.sync()
    assert caught.value.errno == errno.ENOSPC
    assert "pixel store is full" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)
    failed = f"1.2.826.0.1.{len(written)}"
    assert len(written) >= 2
    assert store.temp_dirs() == []
    assert sorted(store.instance_dirs()) == sorted((uid, 0) for uid in written)
    assert (failed, 0) not in set(store.instance_dirs())
    for uid, refs in written.items():
        assert store.verify_instance(refs) == [], uid
    # space freed by a delete is usable again
    store.delete_instance(next(iter(written)))
    store.write_instance(failed, [raw_level(mr_frames)], {}, sync=sync)
    store.sync()
    assert (failed, 0) in set(store.instance_dirs())
    store.close()
