"""A throwaway PKI for the security tests: a CA, a server certificate for 127.0.0.1, a client certificate.

Made with the `openssl` command line tool (the `cryptography` package is not a dependency); nothing is
committed. RSA 2048: what DCMTK's default BCP 195 TLS profile accepts.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: verifying against it must fail


def _openssl(*args: str | Path, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
             "-subj", f"/CN=pacs-engine test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return key, cert


def _leaf(directory: Path, name: str, ca_key: Path, ca_cert: Path, usage: str) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        f"keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n",
        encoding="ascii",
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
             cwd=directory)
    _openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
             "-days", "2", "-extfile", extensions, cwd=directory)
    return cert, key


def make_pki(directory: Path) -> Pki:
    ca_key, ca_cert = _ca(directory, "ca")
    _, other_ca = _ca(directory, "other-ca")
    server_cert, server_key = _leaf(directory, "server", ca_key, ca_cert, "serverAuth")
    client_cert, client_key = _leaf(directory, "client", ca_key, ca_cert, "clientAuth")
    return Pki(ca_cert, server_cert, server_key, client_cert, client_key, other_ca)
