"""A small real filesystem (tmpfs) for tests of a full disk: ENOSPC comes from the kernel."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class MountError(OSError):
    """The tmpfs could not be mounted here (not root, or no permission in this container)."""


@contextmanager
def mounted_tmpfs(mount_point: Path, size_mb: int) -> Iterator[Path]:
    """A `size_mb` tmpfs at `mount_point` (created) until the block ends; raises MountError if none."""
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount_point)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise MountError(f"cannot mount a tmpfs at {mount_point}: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of `path`."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill_leaving(path: Path, leave: int, name: str = "ballast") -> Path:
    """Write a file `name` in the folder `path` so that about `leave` bytes stay free; returns it."""
    ballast = path / name
    with open(ballast, "wb") as f:
        f.write(bytes(max(0, free_bytes(path) - leave)))
    return ballast
