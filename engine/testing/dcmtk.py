"""Run the real DCMTK peers (storescu, echoscu, storescp) against loopback ports, for tests and benches.

A helper layer on top of the engine (not part of the core): it imports pydicom directly, to read the
file meta of the files it sends.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from engine.types import EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE

LOGGER = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255
_UNCOMPRESSED = (EXPLICIT_VR_LE, IMPLICIT_VR_LE, EXPLICIT_VR_BE)


def dcmtk_available() -> bool:
    """True when storescu, storescp and echoscu are on PATH."""
    return all(shutil.which(tool) for tool in ("storescu", "storescp", "echoscu"))


def dcmtk_version() -> str | None:
    """First line of `storescu --version` (e.g. '$dcmtk: storescu v3.6.7 2022-04-22 $'), or None."""
    if shutil.which("storescu") is None:
        return None
    done = subprocess.run(
        ["storescu", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def free_port(host: str = LOOPBACK) -> int:
    """An ephemeral TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_bound(host: str, port: int) -> bool:
    """True when a socket holds host:port, tested by trying to bind it: no connection is made.

    Unlike a connect, this leaves a DICOM listener alone: a bare TCP connection costs a pynetdicom
    server an association thread that waits out its ACSE timeout.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 30.0,
    *,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Return once host:port accepts connections; polls by connecting, never a fixed sleep.

    Raises RuntimeError if `process` exits first, TimeoutError if nothing listens within `timeout`.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process {process.args!r} exited with {process.returncode} before listening on {port}"
            )
        if port_open(host, port):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"nothing listens on {host}:{port} after {timeout:.0f} s"
            )
        time.sleep(0.02)


def _expand(paths: Iterable[Path]) -> list[Path]:
    """Files as given, directories recursively (sorted), like storescu +sd +r."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            files.append(path)
    return files


def _sop_and_syntax(path: Path) -> tuple[str, str] | None:
    try:
        meta = read_file_meta_info(path)
    except (InvalidDicomError, OSError, EOFError, ValueError):
        return None  # not a Part-10 file: storescu skips it with a warning of its own
    sop, syntax = meta.get("MediaStorageSOPClassUID"), meta.get("TransferSyntaxUID")
    return (str(sop), str(syntax)) if sop and syntax else None


def _batches(
    files: Sequence[Path],
) -> list[tuple[list[Path], list[tuple[str, tuple[str, ...]]]]]:
    """Group files so each group's presentation contexts fit one association.

    Each (SOP class, transfer syntax) of the files gets its own context with exactly that syntax, so
    compressed files travel as they are; each SOP class also gets one uncompressed context.
    """
    batches: list[tuple[list[Path], list[tuple[str, tuple[str, ...]]]]] = []
    files_now: list[Path] = []
    contexts: list[tuple[str, tuple[str, ...]]] = []
    for path in files:
        pair = _sop_and_syntax(path)
        wanted = (
            [] if pair is None else [(pair[0], (pair[1],)), (pair[0], _UNCOMPRESSED)]
        )
        needed = list(dict.fromkeys(c for c in wanted if c not in contexts))
        if len(contexts) + len(needed) > MAX_CONTEXTS:
            batches.append((files_now, contexts))
            files_now, contexts, needed = [], [], list(dict.fromkeys(wanted))
        files_now.append(path)
        contexts.extend(needed)
    if files_now:
        batches.append((files_now, contexts))
    return batches


def _config_text(contexts: Sequence[tuple[str, tuple[str, ...]]]) -> str:
    """A DCMTK association configuration file (see DCMTK's storescu.cfg) with one profile 'Send'."""
    syntaxes = sorted({s for _, s in contexts})
    names = {s: f"TS{k}" for k, s in enumerate(syntaxes)}
    lines = ["[[TransferSyntaxes]]"]
    for group in syntaxes:
        lines.append(f"[{names[group]}]")
        lines.extend(f"TransferSyntax{k + 1} = {uid}" for k, uid in enumerate(group))
    lines += ["", "[[PresentationContexts]]", "[Contexts]"]
    lines.extend(
        f"PresentationContext{k + 1} = {sop}\\{names[s]}"
        for k, (sop, s) in enumerate(contexts)
    )
    lines += ["", "[[Profiles]]", "[Send]", "PresentationContexts = Contexts", ""]
    return "\n".join(lines)


_SENDING = re.compile(r"I: Sending file: (.*)")


def storescu_acknowledged(lines: Iterable[str]) -> Iterator[Path]:
    """Each file `storescu -v` reports stored with success, as its output lines (stderr) arrive."""
    current: Path | None = None
    for line in lines:
        if sending := _SENDING.match(line):
            current = Path(sending.group(1).strip())
        elif "Received Store Response (Success)" in line and current is not None:
            yield current
            current = None


def run_storescu(
    host: str,
    port: int,
    paths: Iterable[Path],
    *,
    called_ae: str,
    calling_ae: str = "STORESCU",
    extra: Sequence[str] = (),
    timeout: float = 600.0,
) -> subprocess.CompletedProcess[str]:
    """Send files (directories recursively) with DCMTK storescu, each in its own transfer syntax.

    Proposes exactly the (SOP class, transfer syntax) pairs of the files plus uncompressed fallbacks via
    a generated configuration profile, so storescu sends compressed files as they are instead of failing
    to convert them. Several associations are made when the files need more than 128 contexts. Returns
    the combined result (highest return code); storescu halts at the first failed store unless `extra`
    holds "-nh". Raises subprocess.TimeoutExpired after `timeout` seconds.
    """
    files = _expand(paths)
    if not files:
        raise ValueError("run_storescu: no files to send")
    outputs: list[subprocess.CompletedProcess[str]] = []
    with tempfile.TemporaryDirectory(prefix="storescu-") as tmp:
        for k, (batch, contexts) in enumerate(_batches(files)):
            base = ["storescu", "-aet", calling_ae, "-aec", called_ae, *extra]
            if contexts:
                config = Path(tmp) / f"send{k}.cfg"
                config.write_text(_config_text(contexts), encoding="ascii")
                base += ["-xf", str(config), "Send"]
            command = [*base, host, str(port), *map(str, batch)]
            LOGGER.debug("running %s ... (%d files)", " ".join(base), len(batch))
            outputs.append(
                subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    errors="replace",  # storescu echoes bytes of malformed files in its messages
                    timeout=timeout,
                    check=False,
                )
            )
    return subprocess.CompletedProcess(
        args=[o.args for o in outputs],
        returncode=max(o.returncode for o in outputs),
        stdout="".join(o.stdout for o in outputs),
        stderr="".join(o.stderr for o in outputs),
    )


def run_echoscu(
    host: str,
    port: int,
    *,
    called_ae: str,
    calling_ae: str = "ECHOSCU",
    extra: Sequence[str] = (),
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """One C-ECHO with DCMTK echoscu; return code 0 means the peer answered success."""
    command = [
        "echoscu",
        "-aet",
        calling_ae,
        "-aec",
        called_ae,
        *extra,
        host,
        str(port),
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False
    )


class StoreSCP:
    """DCMTK storescp on a free loopback port writing every received instance into `out_dir`.

    Accepts all transfer syntaxes it knows (+xa) and, with `bit_preserving`, writes each data set
    exactly as received (+B). Use as a context manager; entering waits until the port accepts.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        ae_title: str = "STORESCP",
        port: int | None = None,
        bit_preserving: bool = True,
        extra: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.ae_title = ae_title
        self.host = LOOPBACK
        self.port = port or free_port()
        self.log_path = self.out_dir.parent / f"{self.out_dir.name}.storescp.log"
        self._args = [
            "+xa",
            "-aet",
            ae_title,
            "-pdu",
            "131072",
            *(["+B"] if bit_preserving else []),
            *extra,
        ]
        self._timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        command = ["storescp", *self._args, "-od", str(self.out_dir), str(self.port)]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for_port(self.host, self.port, self._timeout, process=self._process)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"storescp did not start: {exc}\n{self.log()}") from exc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("storescp is not running")
        return self._process.pid

    def files(self) -> list[Path]:
        """The files storescp wrote so far, sorted by name (modality prefix + SOP Instance UID)."""
        return sorted(p for p in self.out_dir.iterdir() if p.is_file())

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    def stop(self) -> int | None:
        """Terminate storescp and wait for it; return its exit code (None if it never started)."""
        return None if self._process is None else _terminate(self._process)


class QueryRetrieveSCP:
    """DCMTK dcmqrscp on a free loopback port: a strict, third-party archive holding `files`.

    Its one AE (`ae_title`) answers C-FIND, C-GET and C-MOVE over the files, indexed with dcmqridx, in
    the hierarchical model only: a query or retrieve below STUDY level must name one UID of each level
    above (PS3.4 C.4.1.2.2.1 and C.4.2.2.1), which pacs-engine's own server does not insist on.
    `move_destinations` maps AE titles to ports on loopback. Use as a context manager.
    """

    def __init__(self, root: Path, files: Iterable[Path], *, ae_title: str = "DCMQRSCP",
                 move_destinations: Mapping[str, int] | None = None, timeout: float = 30.0) -> None:
        self.root = Path(root)
        self.ae_title = ae_title
        self.host = LOOPBACK
        self.port = free_port()
        self._files = list(files)
        self._destinations = dict(move_destinations or {})
        self._timeout = timeout
        self.log_path = self.root / "dcmqrscp.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        storage = self.root / "db"
        storage.mkdir(parents=True, exist_ok=True)
        hosts = "".join(f"{name} = ({name}, {LOOPBACK}, {port})\n" for name, port in self._destinations.items())
        config = self.root / "dcmqrscp.cfg"
        config.write_text(
            f"NetworkTCPPort = {self.port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
            f"HostTable BEGIN\n{hosts}HostTable END\nVendorTable BEGIN\nVendorTable END\n"
            f"AETable BEGIN\n{self.ae_title} {storage} RW (1000, 1024mb) ANY\nAETable END\n",
            encoding="utf-8",
        )
        if self._files:
            copies = []
            for number, path in enumerate(self._files):
                copy = storage / f"{number:06d}.dcm"
                shutil.copyfile(path, copy)
                copies.append(str(copy))
            subprocess.run(["dcmqridx", str(storage), *copies], check=True, capture_output=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(["dcmqrscp", "-c", str(config), "--disable-host-lookup", str(self.port)],
                                             stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.host, self.port, self._timeout, process=self._process)
        except (RuntimeError, TimeoutError) as exc:
            self.__exit__(None, None, None)
            raise RuntimeError(f"dcmqrscp did not start: {exc}\n{self.log_path.read_text(errors='replace')}") from exc
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._process is not None:
            _terminate(self._process)


def _terminate(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL after 10 s; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
