"""`pacs-engine hash-password`: the password hash (or a new bearer token) an admin puts in [auth]."""

from __future__ import annotations

import argparse
import getpass
import sys

from engine.cli._common import EXIT_OK, CliError
from engine.security import hash_password, new_token


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "hash-password", parents=[parent], help="hash a DICOMweb user's password (or make a bearer token)",
        description="Print a salted scrypt hash of a password for [auth.users.NAME] password_hash. The password "
                    "is asked twice on a terminal, or read as one line from standard input (--stdin, or when "
                    "standard input is not a terminal). With --new-token, print a random bearer token for "
                    "[auth.tokens.NAME] token instead.")
    p.add_argument("--stdin", action="store_true", help="read the password as one line from standard input")
    p.add_argument("--new-token", action="store_true", help="print a new random bearer token (43 characters)")
    p.add_argument("--user", default="NAME", help="user name for the [auth.users.NAME] example printed to stderr")
    p.set_defaults(run=run)


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise CliError("the two passwords differ")
    return first


def run(args: argparse.Namespace) -> int:
    if args.new_token:
        token = new_token()
        sys.stdout.write(token + "\n")
        sys.stderr.write(f'# in engine.toml:\n[auth.tokens.{args.user}]\ntoken = "{token}"\nrole = "read"\n')
        return EXIT_OK
    password = _read_password(args.stdin)
    if not password:
        raise CliError("empty password")
    encoded = hash_password(password)
    sys.stdout.write(encoded + "\n")
    sys.stderr.write(f'# in engine.toml:\n[auth.users.{args.user}]\npassword_hash = "{encoded}"\nrole = "read"\n')
    return EXIT_OK
