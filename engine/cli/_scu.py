"""`pacs-engine echo / send / find / get / move`: talk to another DICOM node (operators and migrations)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from engine import dicom
from engine.archive import Archive
from engine.cli._common import EXIT_FAILURE, EXIT_OK, CliError, checked_uid, human_bytes, open_archive, print_table, \
    settings_from
from engine.config import Settings
from engine.errors import EngineError
from engine.security import client_ssl_context
from engine.types import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE, IMPLICIT_VR_LE
if TYPE_CHECKING:  # engine.net loads pynetdicom (~0.1 s): imported where a command runs, not at start-up
    from engine.net import Outgoing, Peer, ScuOptions, StoreResult, TransferSummary

UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
LEVELS = tuple(UNIQUE)


def _peer(text: str) -> Peer:
    from engine.net import Peer

    try:
        return Peer.parse(text)
    except EngineError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _options(args: argparse.Namespace) -> ScuOptions:
    from engine.net import ScuOptions

    settings: Settings = settings_from(args)
    tls = None
    if args.tls or args.tls_ca:
        # Our own certificate goes along for peers that ask for one (mutual TLS); the peer's must verify.
        tls = client_ssl_context(str(args.tls_ca or settings.tls.ca_file), settings.tls.cert_file,
                                 settings.tls.key_file)
    return ScuOptions(calling_ae=args.aet or settings.dicom.ae_title, max_pdu=settings.dicom.max_pdu, tls=tls)


def _keys(pairs: list[str]) -> dict[str, str]:
    """-k Key=Value / -k Key (return key) options as a dict, in order."""
    keys: dict[str, str] = {}
    for pair in pairs:
        keyword, _, value = pair.partition("=")
        if not keyword.strip():
            raise CliError(f"-k {pair!r}: expected Keyword=Value or Keyword")
        keys[keyword.strip()] = value
    return keys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aet", metavar="AE", help="our calling AE title (default: [dicom] ae_title)")
    p.add_argument("--tls", action="store_true",
                   help="associate over TLS: the peer's certificate must verify against [tls] ca_file (else the "
                        "system's CAs) and name the host; [tls] cert_file/key_file are our client certificate")
    p.add_argument("--tls-ca", type=Path, metavar="FILE", help="CA certificates (PEM) for --tls instead of [tls] "
                                                               "ca_file; implies --tls")


def _query_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-k", "--key", action="append", default=[], metavar="KEY[=VALUE]",
                   help="matching key (Keyword=Value, wildcards * ?, ranges A-B) or return key (Keyword)")
    p.add_argument("--level", type=str.upper, choices=LEVELS, default="STUDY", help="query level (default STUDY)")
    p.add_argument("--model", type=str.upper, choices=("STUDY", "PATIENT"), default="STUDY",
                   help="information model: STUDY root (default) or PATIENT root")
    _common(p)


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("echo", parents=[parent], help="C-ECHO another DICOM node",
                              description="Verify a DICOM node answers (C-ECHO). Exit 0 when it does.")
    p.add_argument("peer", type=_peer, metavar="AE@HOST:PORT")
    _common(p)
    p.set_defaults(run=run_echo)

    p = subparsers.add_parser(
        "send", parents=[parent], help="C-STORE files or a study of this archive to another node",
        description="Send Part-10 files (folders recursively), or a study of this archive in the syntax the "
                    "peer accepts (stored, else original, else uncompressed), as encoded bytes. Exit 1 when an "
                    "instance was refused.")
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    p.add_argument("--study", action="append", default=[], metavar="UID", help="a study of --archive (repeatable)")
    p.add_argument("--to", dest="peer", type=_peer, required=True, metavar="AE@HOST:PORT")
    _common(p)
    p.set_defaults(run=run_send)

    p = subparsers.add_parser("find", parents=[parent], help="C-FIND on another node, as a table or JSON",
                              description="Query another node (C-FIND) and print the matches.")
    p.add_argument("--to", dest="peer", type=_peer, required=True, metavar="AE@HOST:PORT")
    p.add_argument("--json", action="store_true", help="a JSON array of objects keyed by DICOM keyword")
    _query_options(p)
    p.set_defaults(run=run_find)

    p = subparsers.add_parser("get", parents=[parent], help="C-GET from another node into this archive",
                              description="Pull matching instances from another node over one association (C-GET) "
                                          "into --archive (opened for writing: stop a 'serve' on it first, or use "
                                          "'move' to that serve's AE title).")
    p.add_argument("--from", "--to", dest="peer", type=_peer, required=True, metavar="AE@HOST:PORT")
    _query_options(p)
    p.set_defaults(run=run_get)

    p = subparsers.add_parser("move", parents=[parent], help="C-MOVE from another node to an AE (e.g. our serve)",
                              description="Ask another node to send matching instances to AE title --dest "
                                          "(C-MOVE); the node must know that AE title's address.")
    p.add_argument("--from", "--to", dest="peer", type=_peer, required=True, metavar="AE@HOST:PORT")
    p.add_argument("--dest", required=True, metavar="AE", help="move destination AE title")
    _query_options(p)
    p.set_defaults(run=run_move)


def run_echo(args: argparse.Namespace) -> int:
    from engine.net import scu_echo

    started = time.monotonic()
    status = scu_echo(args.peer, _options(args))
    sys.stdout.write(f"echo {args.peer}: status 0x{status:04X} in {(time.monotonic() - started) * 1000:.0f} ms\n")
    return EXIT_OK if status == 0 else EXIT_FAILURE


# --- send ---------------------------------------------------------------------------------------------


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path
        else:
            raise CliError(f"{path} does not exist")


# Little-endian native syntaxes a file in one of them can be sent in: the pixel value bytes stay the same.
_LITTLE_ENDIAN_NATIVE = (EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE)


def _file_item(path: Path) -> Outgoing:
    """A file to send: in its own syntax, or, from a little-endian native one, in another such syntax the peer
    accepted (a peer that takes implicit VR only, or picks explicit VR in the uncompressed context)."""
    from engine.net import Outgoing

    parsed = dicom.parse_part10(path.read_bytes())
    own = parsed.transfer_syntax_uid
    others = tuple(s for s in _LITTLE_ENDIAN_NATIVE if s != own) if own in _LITTLE_ENDIAN_NATIVE else ()

    def read(syntax: str) -> bytes | bytearray:
        p = dicom.parse_part10(path.read_bytes())  # read again when sent: never all files in memory at once
        if syntax == p.transfer_syntax_uid:  # as it was, deflated again if it was deflated
            return dicom.assemble_dataset(p.header_prefix, p.pixel_element_header, p.pixel_value, p.header_suffix, syntax)
        return dicom.reencode_dataset(
            p.header_prefix, p.header_suffix, p.transfer_syntax_uid, syntax,
            pixel_value=None if p.pixel_tag == 0 else bytes(p.pixel_value), pixel_tag=p.pixel_tag or 0x7FE00010,
        )

    return Outgoing(parsed.sop_class_uid, parsed.sop_instance_uid, (own, *others), read)


def _study_items(archive: Archive, study: str) -> list[Outgoing]:
    from engine.net import Outgoing, preferred_syntaxes

    items: list[Outgoing] = []
    for series in archive.series_uids(checked_uid(study, "study")):
        for sop in archive.instance_uids(series):
            record = archive.record(sop)
            items.append(Outgoing(record.sop_class_uid, sop, preferred_syntaxes(record), _reader(archive, sop)))
    return items


def _reader(archive: Archive, sop: str) -> Callable[[str], bytes | bytearray]:
    def read(syntax: str) -> bytes | bytearray:
        return archive.read_dataset(sop, syntax)[1]

    return read


def _send(args: argparse.Namespace, items: list[Outgoing]) -> int:
    from engine.net import scu_send

    started = time.monotonic()
    with tqdm(total=len(items), unit="inst", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:
        def progress(result: StoreResult, size: int) -> None:
            bar.update(1)

        summary = scu_send(args.peer, items, _options(args), progress)
    _report("sent", args.peer, summary, time.monotonic() - started)
    return EXIT_OK if summary.failed == 0 else EXIT_FAILURE


def run_send(args: argparse.Namespace) -> int:
    if bool(args.paths) == bool(args.study):
        raise CliError("give files/folders to send, or --study UID (from --archive), not both")
    if args.paths:
        items = []
        for path in _files(args.paths):
            try:
                items.append(_file_item(path))
            except EngineError as exc:
                sys.stderr.write(f"skipped {path}: {exc}\n")
        if not items:
            raise CliError("nothing to send")
        return _send(args, items)
    with open_archive(args, readonly=True) as archive:
        items = [item for study in args.study for item in _study_items(archive, study)]
        if not items:
            raise CliError(f"no instances in {', '.join(args.study)}")
        return _send(args, items)


def _report(verb: str, peer: Peer, summary: TransferSummary, seconds: float) -> None:
    total = summary.completed + summary.warning + summary.failed
    rate = total / seconds if seconds > 0 else 0.0
    size = "" if verb.startswith("moved") else f" ({human_bytes(summary.bytes)})"  # a move's bytes pass us by
    sys.stdout.write(
        f"{verb} {total} instances{size} {'to' if verb == 'sent' else 'from'} {peer} in "
        f"{seconds:.1f} s ({rate:.0f} inst/s): {summary.completed} completed, {summary.warning} warning, "
        f"{summary.failed} failed\n"
    )
    for uid in summary.failed_uids:
        sys.stderr.write(f"failed: {uid}\n")


# --- find ---------------------------------------------------------------------------------------------


def run_find(args: argparse.Namespace) -> int:
    from engine.net import scu_find

    keys = _keys(args.key)
    keys.setdefault(UNIQUE[args.level], "")
    matches = list(scu_find(args.peer, args.level, keys, model=args.model, options=_options(args)))
    if args.json:
        json.dump(matches, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return EXIT_OK
    columns = [(k, k) for k in keys]
    print_table([dict(m) for m in matches], columns)
    sys.stderr.write(f"{len(matches)} match{'es' if len(matches) != 1 else ''}\n")
    return EXIT_OK


# --- get and move -------------------------------------------------------------------------------------


def _bar_updater(bar: tqdm[None]) -> Callable[[TransferSummary], None]:
    def update(summary: TransferSummary) -> None:
        done = summary.completed + summary.failed + summary.warning
        if summary.remaining and bar.total != done + summary.remaining:
            bar.total = done + summary.remaining
        bar.n = done
        bar.refresh()

    return update


def _parents(level: str, model: str) -> list[str]:
    """The unique keys of the levels above `level` that a retrieve names (PS3.4 C.4.2.2.1): Study Root has
    no patient level, so a series is named by its study, an instance by its study and series."""
    hierarchy = ["StudyInstanceUID", "SeriesInstanceUID"] if model == "STUDY" else \
        ["PatientID", "StudyInstanceUID", "SeriesInstanceUID"]
    return hierarchy[: LEVELS.index(level) - (1 if model == "STUDY" else 0)]


def _retrievals(args: argparse.Namespace, keys: dict[str, str]) -> list[dict[str, str]]:
    """Retrieve identifiers for the keys: as given when they are one UID per level above and the level's
    UIDs, else the matches of a C-FIND, grouped by parent (a retrieve names only unique keys, one parent
    at a time). Raises CliError when a UID key holds a wild card or nothing matches."""
    from engine.net import scu_find

    unique = UNIQUE[args.level]
    parents = _parents(args.level, args.model)
    for key in (*parents, unique):
        if key != "PatientID" and any(c in keys.get(key, "") for c in "*?"):
            raise CliError(f"-k {key}={keys[key]}: UIDs match as given or as a list (PS3.4 C.2.2.2.2), "
                           "never with wild cards")
    given = {k: v.strip() for k, v in keys.items() if v.strip()}
    exact = not any(c in value for value in given.values() for c in "*?")
    if set(given) == {*parents, unique} and exact and not any("\\" in given[k] for k in parents):
        return [{k: given[k] for k in (*parents, unique)}]
    wanted = {**keys, unique: keys.get(unique, ""), **{k: keys.get(k, "") for k in parents}}
    groups: dict[tuple[str, ...], list[str]] = {}
    for match in scu_find(args.peer, args.level, wanted, model=args.model, options=_options(args)):
        if match.get(unique):
            groups.setdefault(tuple(match.get(k, "") for k in parents), []).append(match[unique])
    if not groups:
        raise CliError(f"nothing on {args.peer} matches {' '.join(f'{k}={v}' for k, v in keys.items())} "
                       f"at {args.level} level")
    return [{**dict(zip(parents, parent, strict=True)), unique: "\\".join(uids)} for parent, uids in groups.items()]


def _sop_classes(args: argparse.Namespace, keys: dict[str, str]) -> list[str]:
    """SOP classes of the instances a retrieve selects, asked with a C-FIND at IMAGE level ([] if refused)."""
    from engine.net import scu_find

    image_keys = {**keys, "SOPClassUID": ""}
    try:
        return sorted({m.get("SOPClassUID", "") for m in scu_find(args.peer, "IMAGE", image_keys, model=args.model,
                                                                options=_options(args))} - {""})
    except EngineError:
        return []


def _add(total: TransferSummary, part: TransferSummary) -> None:
    total.completed += part.completed
    total.warning += part.warning
    total.failed += part.failed
    total.bytes += part.bytes
    total.failed_uids += part.failed_uids


def run_get(args: argparse.Namespace) -> int:
    from engine.net import ScuError, TransferSummary, scu_get

    refused: list[str] = []
    started = time.monotonic()
    total = TransferSummary()
    broken: ScuError | None = None
    with open_archive(args, readonly=False) as archive:
        def receive(data: bytes, syntax: str) -> None:
            try:
                archive.accept(data, syntax)
            except EngineError as exc:
                refused.append(str(exc))
                raise

        for keys in _retrievals(args, _keys(args.key)):
            classes = _sop_classes(args, keys)
            with tqdm(total=None, unit="inst", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:
                try:
                    part = scu_get(args.peer, args.level, keys, receive, model=args.model, sop_classes=classes,
                                   options=_options(args), progress=_bar_updater(bar))
                except ScuError as exc:
                    part, broken = exc.summary or TransferSummary(), exc
            _add(total, part)
            if broken is not None:
                break
        archive.wait_for_ingests()  # what arrived before a break stays: it was acknowledged
    _report("got", args.peer, total, time.monotonic() - started)
    for reason in refused:
        sys.stderr.write(f"refused: {reason}\n")
    return _outcome(args.peer, total, broken, refused)


def run_move(args: argparse.Namespace) -> int:
    from engine.net import ScuError, TransferSummary, scu_move

    started = time.monotonic()
    total = TransferSummary()
    broken: ScuError | None = None
    for keys in _retrievals(args, _keys(args.key)):
        with tqdm(total=None, unit="inst", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:
            try:
                part = scu_move(args.peer, args.level, keys, args.dest, model=args.model, options=_options(args),
                                progress=_bar_updater(bar))
            except ScuError as exc:
                part, broken = exc.summary or TransferSummary(), exc
        _add(total, part)
        if broken is not None:
            break
    _report(f"moved to {args.dest}", args.peer, total, time.monotonic() - started)
    return _outcome(args.peer, total, broken, [])


def _outcome(peer: Peer, total: TransferSummary, broken: EngineError | None, refused: list[str]) -> int:
    """The exit code of a get or move, after its summary: a failure also when the peer sent nothing."""
    if broken is not None:
        sys.stderr.write(f"error: {broken}\n")
        return EXIT_FAILURE
    if total.completed + total.warning + total.failed == 0:
        sys.stderr.write(f"error: {peer} retrieved no instances: it holds none that match\n")
        return EXIT_FAILURE
    return EXIT_OK if total.failed == 0 and not refused else EXIT_FAILURE
