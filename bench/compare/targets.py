"""The archives under test: pacs-engine, Orthanc and DCMTK storescp, each started on loopback with its own storage.

Every target is started by the bench with a configuration it writes itself (never a system service), and
is measured from outside: its storage folder on disk and its process in /proc.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from engine.testing.dcmtk import LOOPBACK, StoreSCP, dcmtk_available, free_port, wait_for_port
from engine.testing.server import running_server

JPEGLS_LOSSLESS = "1.2.840.10008.1.2.4.80"
BENCH_AE = "BENCH"  # the bench's calling AE title, and the C-MOVE destination (its own storescp)
ORTHANC_PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"), Path("/usr/local/share/orthanc/plugins"))
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Node:
    """A DICOM application entity: AE title, host and port."""

    ae_title: str
    host: str
    port: int


def peak_rss_bytes(pid: int) -> int:
    """VmHWM (the peak resident set) of a live process, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process and its reaped children, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces
    utime, stime, cutime, cstime = (int(fields[k]) for k in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / _CLOCK_TICKS


def disk_bytes(root: Path) -> int:
    """Bytes allocated on disk under `root` (what `du` counts: blocks, not file lengths)."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except FileNotFoundError:
                continue  # a temporary file renamed or removed while we walk
    return total


def wait_http(url: str, process: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> None:
    """Return once GET `url` answers 200; RuntimeError if `process` dies or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")
        time.sleep(0.05)


class Target(ABC):
    """One archive under test. `start` gives it fresh storage under a work folder; `stop` ends it."""

    name: str  # unique label in the report
    family: str  # what --targets selects: pacs-engine, orthanc, dcmtk
    web = True  # serves DICOMweb (QIDO, WADO-RS, STOW-RS)
    retrieve = True  # answers C-GET and C-MOVE
    dicom: Node
    web_root = ""  # DICOMweb base URL, "" when web is False
    storage_dir: Path
    # Accept header for frames at a lower resolution (?level=k); "" when the target has no levels.
    low_res_accept = ""

    @abstractmethod
    def missing(self) -> str | None:
        """None when the target can run here, else how to install what it needs."""

    @abstractmethod
    def start(self, workdir: Path, move_destination: Node) -> None:
        """Start with empty storage under `workdir`; return once it accepts DICOM (and HTTP). Raises RuntimeError."""

    @abstractmethod
    def stop(self) -> str | None:
        """Stop it; return a note when it had died on its own (a crash), else None."""

    @property
    @abstractmethod
    def pid(self) -> int: ...

    def log_tail(self, lines: int = 20) -> str:
        return ""

    def alive(self) -> bool:
        """True while the server process runs."""
        try:
            return _alive(self.pid)
        except RuntimeError:
            return False


class PacsEngine(Target):
    """`pacs-engine serve` with DICOMweb, in one storage profile (htj2k by default, or jpegls)."""

    family = "pacs-engine"

    def __init__(self, profile: str = "htj2k") -> None:
        self.profile = profile
        self.name = "pacs-engine" if profile == "htj2k" else f"pacs-engine-{profile}"
        # HTJ2K levels are prefixes of the stored codestream, sent as stored; the other profiles keep
        # reduced levels as separate pyramid arrays, asked for here as decoded pixels.
        self.low_res_accept = (
            'multipart/related; type="application/octet-stream"; transfer-syntax=*'
            if profile == "htj2k"
            else 'multipart/related; type="application/octet-stream"'
        )
        self._stack: ExitStack | None = None
        self._pid = 0
        self._log: Path | None = None

    def missing(self) -> str | None:
        return None

    def start(self, workdir: Path, move_destination: Node) -> None:
        archive = workdir / "archive"
        archive.mkdir(parents=True)
        (archive / "engine.toml").write_text(
            f'[storage]\nprofile = "{self.profile}"\n\n[dicom]\n'
            f'remote_aes = {{ {move_destination.ae_title} = "{move_destination.host}:{move_destination.port}" }}\n'
        )
        http_port = free_port()
        stack = ExitStack()
        handle = stack.enter_context(running_server(archive, extra_args=["--http-port", str(http_port)]))
        self._stack, self._pid, self._log = stack, handle.pid, handle.log_path
        self.dicom = Node(handle.ae_title, handle.host, handle.port)
        self.web_root = f"http://{LOOPBACK}:{http_port}"
        self.storage_dir = archive
        try:
            wait_http(f"{self.web_root}/studies", handle.process)
        except RuntimeError:
            stack.close()
            raise

    def stop(self) -> str | None:
        if self._stack is None:
            return None
        note = None
        if not _alive(self._pid):
            note = f"{self.name} exited during the run; it last said: {self.log_tail(1)}"
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        return note

    @property
    def pid(self) -> int:
        return self._pid

    def log_tail(self, lines: int = 20) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if os.access(p, os.X_OK)), None)


def dicomweb_plugin() -> Path | None:
    for folder in ORTHANC_PLUGIN_DIRS:
        found = sorted(folder.glob("libOrthancDicomWeb.so*")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


class Orthanc(Target):
    """Debian's Orthanc with its DICOMweb plugin, plain or transcoding what it receives to JPEG-LS lossless."""

    family = "orthanc"

    def __init__(self, ingest_transcoding: str | None = None) -> None:
        self.ingest_transcoding = ingest_transcoding
        self.name = "orthanc" if ingest_transcoding is None else "orthanc-jpegls"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    def missing(self) -> str | None:
        if orthanc_binary() is None:
            return "Orthanc is not installed: apt-get install orthanc orthanc-dicomweb"
        if dicomweb_plugin() is None:
            return "Orthanc's DICOMweb plugin is not installed: apt-get install orthanc-dicomweb"
        return None

    def config(self, storage: Path, dicom_port: int, http_port: int, move_destination: Node) -> dict[str, object]:
        """The Orthanc configuration: its own storage, ephemeral ports, no auth, DICOMweb, the bench's AE."""
        config: dict[str, object] = {
            "Name": self.name,
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [str(dicomweb_plugin())],
            "HttpPort": http_port,
            "DicomPort": dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": {
                "bench": [move_destination.ae_title, move_destination.host, move_destination.port]
            },
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "SaveJobs": False,
        }
        if self.ingest_transcoding:
            config["IngestTranscoding"] = self.ingest_transcoding
        return config

    def start(self, workdir: Path, move_destination: Node) -> None:
        binary = orthanc_binary()
        if binary is None:
            raise RuntimeError(self.missing())
        storage = workdir / "orthanc-storage"
        storage.mkdir(parents=True)
        dicom_port, http_port = free_port(), free_port()
        config_path = workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(storage, dicom_port, http_port, move_destination), indent=2))
        self._log = workdir / "orthanc.log"
        with self._log.open("wb") as log:
            self._process = subprocess.Popen([binary, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
        self.dicom = Node("ORTHANC", LOOPBACK, dicom_port)
        self.web_root = f"http://{LOOPBACK}:{http_port}/dicom-web"
        self.storage_dir = storage
        try:
            wait_http(f"http://{LOOPBACK}:{http_port}/system", self._process)
            wait_for_port(LOOPBACK, dicom_port, 30, process=self._process)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"Orthanc did not start: {exc}\n{self.log_tail()}") from exc

    def stop(self) -> str | None:
        process, self._process = self._process, None
        if process is None:
            return None
        code = process.poll()
        note = None if code is None else f"{self.name} exited with {code} during the run; it last said: {self.log_tail(1)}"
        if code is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return note

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    def log_tail(self, lines: int = 20) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])


class Dcmtk(Target):
    """DCMTK storescp writing each instance as a file (forking per association): the raw-file ingest floor."""

    family = "dcmtk"
    name = "dcmtk-storescp"
    web = False
    retrieve = False

    def __init__(self) -> None:
        self._scp: StoreSCP | None = None

    def missing(self) -> str | None:
        return None if dcmtk_available() else "DCMTK is not installed: apt-get install dcmtk"

    def start(self, workdir: Path, move_destination: Node) -> None:
        self.storage_dir = workdir / "storescp"
        self._scp = StoreSCP(self.storage_dir, ae_title="STORESCP", extra=["--fork"]).__enter__()
        self.dicom = Node("STORESCP", self._scp.host, self._scp.port)

    def stop(self) -> str | None:
        scp, self._scp = self._scp, None
        if scp is None:
            return None
        died = not _alive(scp.pid)
        scp.stop()
        return f"storescp exited during the run:\n{scp.log()[-2000:]}" if died else None

    @property
    def pid(self) -> int:
        if self._scp is None:
            raise RuntimeError("storescp is not running")
        return self._scp.pid


def all_targets() -> list[Target]:
    """Every target the bench knows, in report order (pacs-engine first: the ratios' reference)."""
    return [PacsEngine("htj2k"), PacsEngine("jpegls"), Orthanc(), Orthanc(JPEGLS_LOSSLESS), Dcmtk()]


FAMILIES = ("pacs-engine", "orthanc", "dcmtk")
