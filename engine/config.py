"""The frozen settings tree: defaults < TOML file < PACS_ENGINE_SECTION__KEY environment variables."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from engine.errors import ConfigError
from engine.security import check_password_hash
from engine.types import PROFILES

ENV_PREFIX = "PACS_ENGINE_"


@dataclass(frozen=True, slots=True)
class StorageSettings:
    profile: str = "htj2k"  # lossless codec for new pixel data: htj2k, jpegls or jpeg2k
    overwrite: bool = False  # a different instance with a known SOP Instance UID replaces the old one
    pixels_url: str = ""  # where the Zarr hierarchy lives; empty means ARCHIVE/pixels
    index_map_size_mb: int = 1024  # initial LMDB map size; it grows automatically when full
    workers: int = 0  # codec worker threads; 0 means one per core
    commit_batch: int = 64  # most instances one index write transaction commits
    allow_delete: bool = False  # studies, series and instances may be deleted (CLI, DICOMweb DELETE)


@dataclass(frozen=True, slots=True)
class DicomSettings:
    ae_title: str = "PACS_ENGINE"
    host: str = "0.0.0.0"
    port: int = 11112
    max_pdu: int = 262_144  # large PDUs: measured 1.4x the throughput of pynetdicom's 16 KiB default
    allowed_calling_aes: tuple[str, ...] = ()  # empty: any calling AE title may associate
    check_called_ae: bool = False  # True: an association must call this node's ae_title (reason 7 otherwise)
    # Per service, on top of the above: empty means every AE that may associate; otherwise only these.
    allowed_store_aes: tuple[str, ...] = ()  # C-STORE (others get 0x0124 Refused: Not authorized)
    allowed_find_aes: tuple[str, ...] = ()  # C-FIND (0x0124)
    allowed_retrieve_aes: tuple[str, ...] = ()  # C-GET (0x0124) and C-MOVE (its contexts are not accepted)
    # AE title -> "host:port" for C-MOVE destinations
    remote_aes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = "0.0.0.0"
    port: int = 0  # 0: DICOMweb is not served


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Certificates for the listeners and the SCU commands. Relative paths are under the archive folder."""

    cert_file: str = ""  # this node's certificate chain (PEM); with key_file, the listeners speak TLS
    key_file: str = ""  # its private key (PEM, not encrypted)
    client_ca_file: str = ""  # DIMSE listener: require client certificates signed by these CAs (mutual TLS)
    ca_file: str = ""  # SCU commands with --tls: CAs the peer's certificate must chain to (empty: system's)
    dicom: bool = True  # TLS on the DIMSE listener when cert_file is set
    http: bool = True  # HTTPS for DICOMweb when cert_file is set

    @property
    def dicom_enabled(self) -> bool:
        return bool(self.cert_file) and self.dicom

    @property
    def http_enabled(self) -> bool:
        return bool(self.cert_file) and self.http


DEFAULT_REALM = "pacs-engine"
ROLES = ("read", "write")  # read: GET and HEAD; write: also POST (STOW-RS) and DELETE


@dataclass(frozen=True, slots=True)
class Credential:
    """One DICOMweb client: a name for logs and the audit trail, its role, and its secret."""

    name: str
    role: str
    secret: str  # a bearer token as given, or a password hash made by `pacs-engine hash-password`


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """DICOMweb authentication: [auth.tokens.NAME] token/role and [auth.users.NAME] password_hash/role.

    With neither, DICOMweb is open to anyone who can reach it.
    """

    realm: str = DEFAULT_REALM
    tokens: tuple[Credential, ...] = ()
    users: tuple[Credential, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.tokens or self.users)


@dataclass(frozen=True, slots=True)
class AuditSettings:
    enabled: bool = True
    path: str = ""  # JSON lines, one per event; empty means ARCHIVE/audit.log; relative paths are under ARCHIVE


@dataclass(frozen=True, slots=True)
class Settings:
    archive: Path = Path("archive")
    storage: StorageSettings = field(default_factory=StorageSettings)
    dicom: DicomSettings = field(default_factory=DicomSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)

    @property
    def index_path(self) -> Path:
        return self.archive / "index"

    @property
    def pixels_path(self) -> str:
        return self.storage.pixels_url or str(self.archive / "pixels")

    @property
    def audit_path(self) -> Path | None:
        """Where the audit trail goes, or None when [audit] enabled is false."""
        if not self.audit.enabled:
            return None
        return self.archive / (self.audit.path or "audit.log")


_S = TypeVar("_S", StorageSettings, DicomSettings, HttpSettings, TlsSettings, AuditSettings)
_SECTIONS = ("storage", "dicom", "http", "tls", "auth", "audit")


def _coerce(section: str, key: str, default: object, value: object) -> object:
    """Convert a TOML or environment value to the type of the default, or say what is wrong."""
    where = f"[{section}] {key}"
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, tuple):
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
    elif isinstance(default, Mapping):
        if isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values()):
            return dict(value)
    raise ConfigError(f"{where}: {value!r} is not a valid {type(default).__name__}")


def _apply(section_name: str, base: _S, values: Mapping[str, object]) -> _S:
    known = {f.name: getattr(base, f.name) for f in fields(base)}
    changes: dict[str, object] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"[{section_name}] has no setting {key!r}; known: {', '.join(sorted(known))}")
        changes[key] = _coerce(section_name, key, known[key], value)
    # replace() checks each field's type per keyword; the values were coerced to them just above.
    return replace(base, **cast(dict[str, Any], changes))


def _env_sections(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        out.setdefault(section, {})[key] = value
    return out


def load_settings(
    archive: Path | str | None = None,
    config_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Mapping[str, object],
) -> Settings:
    """Build the settings: defaults, then the TOML file, then the environment, then explicit overrides.

    `config_file` defaults to ARCHIVE/engine.toml when that exists. Raises ConfigError on unknown
    sections or keys, wrong types and invalid values.
    """
    archive_path = Path(archive) if archive is not None else Path("archive")
    sections: dict[str, dict[str, object]] = {name: {} for name in _SECTIONS}
    path = Path(config_file) if config_file is not None else archive_path / "engine.toml"
    if config_file is not None and not path.is_file():
        raise ConfigError(f"configuration file {path} does not exist")
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        remote = data.pop("remote_aes", None)
        for name, values in data.items():
            if name not in sections or not isinstance(values, dict):
                raise ConfigError(f"{path}: unknown section [{name}]; known: {', '.join(_SECTIONS)}, remote_aes")
            sections[name].update(values)
        if remote is not None:
            sections["dicom"]["remote_aes"] = remote
    for name, values in _env_sections(os.environ if environ is None else environ).items():
        if name not in sections:
            raise ConfigError(f"environment: unknown section {name!r} in {ENV_PREFIX}{name.upper()}__...")
        sections[name].update(values)
    for name, values in overrides.items():
        if name not in sections:
            raise ConfigError(f"unknown section {name!r}")
        sections[name].update({k: v for k, v in values.items() if v is not None})
    settings = Settings(
        archive=archive_path,
        storage=_apply("storage", StorageSettings(), sections["storage"]),
        dicom=_apply("dicom", DicomSettings(), sections["dicom"]),
        http=_apply("http", HttpSettings(), sections["http"]),
        tls=_under_archive(archive_path, _apply("tls", TlsSettings(), sections["tls"])),
        auth=_auth_settings(sections["auth"]),
        audit=_apply("audit", AuditSettings(), sections["audit"]),
    )
    _validate(settings)
    _validate_security(settings)
    return settings


def _under_archive(archive: Path, tls: TlsSettings) -> TlsSettings:
    """Relative certificate paths resolved under the archive folder, where engine.toml lives."""
    def under(value: str) -> str:
        return str(archive / value) if value else ""

    return replace(tls, cert_file=under(tls.cert_file), key_file=under(tls.key_file),
                   client_ca_file=under(tls.client_ca_file), ca_file=under(tls.ca_file))


def _credentials(kind: str, secret_key: str, table: object) -> tuple[Credential, ...]:
    """[auth.KIND.NAME] tables, each with `secret_key` and role, as Credentials. Raises ConfigError."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"[auth.{kind}] must be tables: [auth.{kind}.NAME] with {secret_key} and role")
    out = []
    for name, entry in table.items():
        where = f"[auth.{kind}.{name}]"
        if not isinstance(entry, Mapping) or set(entry) != {secret_key, "role"}:
            raise ConfigError(f"{where} needs exactly {secret_key} and role")
        secret, role = entry[secret_key], entry["role"]
        if not isinstance(secret, str) or not isinstance(role, str):
            raise ConfigError(f"{where} {secret_key} and role must be strings")
        if role not in ROLES:
            raise ConfigError(f"{where} role {role!r} is not one of {', '.join(ROLES)}")
        out.append(Credential(str(name), role, secret))
    return tuple(out)


def _auth_settings(values: Mapping[str, object]) -> AuthSettings:
    unknown = set(values) - {"realm", "tokens", "users"}
    if unknown:
        raise ConfigError(f"[auth] has no setting {sorted(unknown)[0]!r}; known: realm, tokens, users")
    realm = values.get("realm", DEFAULT_REALM)
    if not isinstance(realm, str) or not realm.isprintable() or '"' in realm or "\\" in realm:
        raise ConfigError(f"[auth] realm {realm!r} must be printable text without quotes or backslashes")
    return AuthSettings(
        realm=realm,
        tokens=_credentials("tokens", "token", values.get("tokens", {})),
        users=_credentials("users", "password_hash", values.get("users", {})),
    )


MIN_TOKEN_LENGTH = 16  # a shorter bearer token can be guessed; `pacs-engine hash-password --new-token` makes 43


def _validate_security(settings: Settings) -> None:
    tls = settings.tls
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("[tls] cert_file and key_file go together: give both or neither")
    if tls.client_ca_file and not tls.cert_file:
        raise ConfigError("[tls] client_ca_file needs cert_file and key_file (the listener must speak TLS)")
    for name in ("cert_file", "key_file", "client_ca_file", "ca_file"):
        value = getattr(tls, name)
        if value and not Path(value).is_file():
            raise ConfigError(f"[tls] {name} {value} does not exist or is not a file")
    tokens = [c.secret for c in settings.auth.tokens]
    for credential in settings.auth.tokens:
        if len(credential.secret) < MIN_TOKEN_LENGTH or not credential.secret.isascii() or not credential.secret.isprintable():
            raise ConfigError(f"[auth.tokens.{credential.name}] token must be at least {MIN_TOKEN_LENGTH} printable "
                              "ASCII characters")
        if tokens.count(credential.secret) > 1:
            raise ConfigError(f"[auth.tokens.{credential.name}] token is also given to another name")
    for credential in settings.auth.users:
        if ":" in credential.name or not credential.name.isprintable():
            raise ConfigError(f"[auth.users.{credential.name}] a user name cannot hold ':' or control characters")
        try:
            check_password_hash(credential.secret)
        except ValueError as exc:
            raise ConfigError(f"[auth.users.{credential.name}] password_hash: {exc}") from exc
    dicom = settings.dicom
    if dicom.allowed_calling_aes:
        for name in ("allowed_store_aes", "allowed_find_aes", "allowed_retrieve_aes"):
            for title in getattr(dicom, name):
                if title not in dicom.allowed_calling_aes:
                    raise ConfigError(f"[dicom] {name} names {title!r}, which allowed_calling_aes does not let "
                                      "associate at all")


def _validate(settings: Settings) -> None:
    if settings.storage.profile not in PROFILES:
        raise ConfigError(f"[storage] profile {settings.storage.profile!r} is not one of {', '.join(PROFILES)}")
    ae = settings.dicom.ae_title
    if not ae or len(ae) > 16 or not ae.isascii() or "\\" in ae or not ae.strip():
        raise ConfigError(f"[dicom] ae_title {ae!r} must be 1 to 16 ASCII characters without backslash")
    storage = settings.storage
    for name, value, least in (("workers", storage.workers, 0), ("commit_batch", storage.commit_batch, 1),
                               ("index_map_size_mb", storage.index_map_size_mb, 1)):
        if value < least:
            raise ConfigError(f"[storage] {name} {value} must be {least} or more")
    for port_name, port in (("[dicom] port", settings.dicom.port), ("[http] port", settings.http.port)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{port_name} {port} is outside 0..65535")
    for title, address in settings.dicom.remote_aes.items():
        host, _, port_text = address.rpartition(":")
        if not host or not port_text.isdigit():
            raise ConfigError(f"[remote_aes] {title} = {address!r}: expected 'host:port'")
