"""Secrets and certificates: password hashes for DICOMweb users, TLS contexts for the listeners and the SCU."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import ssl

from engine.errors import ConfigError

# scrypt at N=2^14, r=8, p=1 (16 MiB, about 50 ms here): RFC 7914's interactive-login parameters.
SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_SCHEME = "scrypt"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # maxmem above the 32 MiB default leaves room for stronger stored parameters than ours.
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_KEY_BYTES, maxmem=1 << 28)


def hash_password(password: str) -> str:
    """A salted scrypt hash of `password` as one line: scrypt$N$r$p$salt$key (base64). Raises ValueError if empty."""
    if not password:
        raise ValueError("an empty password cannot be hashed")
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        raise ValueError("expected scrypt$N$r$p$salt$key, as `pacs-engine hash-password` prints")
    try:
        n, r, p = (int(v) for v in parts[1:4])
        salt, key = _unb64(parts[4]), _unb64(parts[5])
    except ValueError as exc:  # binascii.Error is a ValueError
        raise ValueError(f"malformed number or base64 in the hash ({exc})") from None
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or n * r > 1 << 21:
        raise ValueError(f"scrypt parameters N={n} r={r} p={p} are out of range")
    if len(salt) < 8 or len(key) != _KEY_BYTES:
        raise ValueError("the salt or the key has the wrong length")
    return n, r, p, salt, key


def check_password_hash(encoded: str) -> None:
    """Raise ValueError saying what is wrong when `encoded` is not a hash `hash_password` can have made."""
    _parse(encoded)


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches the hash; the comparison takes the same time whatever the bytes.

    Raises ValueError for a malformed hash (config validation refuses those first).
    """
    n, r, p, salt, key = _parse(encoded)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), key)


def new_token() -> str:
    """A random bearer token: 32 bytes from the OS, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def server_ssl_context(cert_file: str, key_file: str, client_ca_file: str = "") -> ssl.SSLContext:
    """TLS 1.2+ for a listener; with `client_ca_file`, clients must present a certificate signed by one of those CAs.

    Raises ConfigError when a file cannot be read or the key does not match the certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
        if client_ca_file:
            context.load_verify_locations(cafile=client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[tls] cannot load {cert_file} / {key_file} / {client_ca_file or '-'}: {exc}") from exc
    return context


def client_ssl_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """TLS 1.2+ for an SCU: the peer's certificate must chain to `ca_file` (else the system's CAs) and name the
    host; `cert_file`/`key_file` are presented when the peer asks for a client certificate.

    Raises ConfigError when a file cannot be read.
    """
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file:
            context.load_cert_chain(cert_file, key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[tls] cannot load {ca_file or 'the system CAs'} / {cert_file or '-'}: {exc}") from exc
    return context
