"""Baseline receiver for ingest benchmarks: a pynetdicom C-STORE SCP that only writes the raw files.

It takes the encoded data set as received (no decoding), prefixes a file meta header and writes it:
the floor any pynetdicom-based archive is measured against. Same PDU size and TCP_NODELAY as
`pacs-engine serve`, so the comparison isolates what the archive does with each instance.
Run: python bench/raw_scp.py --port N --out DIR [--fsync]; prints "listening: dicom=HOST:PORT" when ready.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from pydicom.filewriter import write_file_meta_info
from pydicom.dataset import FileMetaDataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

ALL_SYNTAXES = [
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.5",
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fsync", action="store_true", help="fsync each file before answering success")
    parser.add_argument("--max-pdu", type=int, default=262_144)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    def on_store(event: Any) -> int:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = event.request.AffectedSOPClassUID
        meta.MediaStorageSOPInstanceUID = event.request.AffectedSOPInstanceUID
        meta.TransferSyntaxUID = event.context.transfer_syntax
        path = args.out / f"{event.request.AffectedSOPInstanceUID}.dcm"
        with open(path, "wb") as f:
            f.write(b"\0" * 128 + b"DICM")
            write_file_meta_info(f, meta, enforce_standard=True)  # type: ignore[arg-type]
            f.write(event.request.DataSet.getvalue())
            if args.fsync:
                f.flush()
                os.fsync(f.fileno())
        return 0x0000

    def on_connect(event: Any) -> None:
        sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    ae = AE(ae_title="RAW_SCP")
    ae.maximum_pdu_size = args.max_pdu
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_SYNTAXES)
    server = ae.start_server(
        (args.host, args.port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, on_connect)],
    )
    print(f"listening: dicom={args.host}:{args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
