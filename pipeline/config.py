"""Loads pipeline.toml into typed, validated settings; reads secrets only when they are needed."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, SecretError
from pipeline.vocabulary import RECOGNIZED_CARRIERS

DEFAULT_CONFIG = Path("pipeline.toml")
SECURITY_MODES = ("ssl", "starttls", "plain")
LOG_FORMATS = ("text", "json")
TRUST_MODES = ("strict", "lenient")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class ImapSettings:
    """How to reach and log in to the mailbox, and which folders to watch."""

    host: str
    username: str
    port: int = 0  # 0: the default port of `security`
    security: str = "ssl"
    password_env: str = ""
    password_file: str = ""
    password_command: str = ""
    oauth2_token_command: str = ""
    ca_file: str = ""
    inbox: str = "INBOX"
    folders: tuple[str, ...] = ()
    drafts: str = ""
    sent: str = ""
    timeout: float = 30.0
    poll_interval: float = 60.0
    idle_renew: float = 540.0
    batch_size: int = 200

    @property
    def effective_port(self) -> int:
        """The configured port, or the standard one for the security mode."""
        if self.port:
            return self.port
        return 993 if self.security == "ssl" else 143

    @property
    def watched_folders(self) -> tuple[str, ...]:
        """The folders the poller reads: `folders` when given, else just the inbox."""
        return self.folders or (self.inbox,)

    @property
    def uses_oauth2(self) -> bool:
        """True when login is XOAUTH2 with a token from `oauth2_token_command`."""
        return bool(self.oauth2_token_command)

    def secret(self) -> str:
        """The password (or OAuth2 access token), read now from its env var, file or command."""
        if self.oauth2_token_command:
            return _run_secret_command(self.oauth2_token_command, "oauth2_token_command")
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise SecretError(f"environment variable {self.password_env} (imap.password_env) is not set")
            return value
        if self.password_file:
            path = Path(self.password_file).expanduser()
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SecretError(f"cannot read imap.password_file {path}: {exc.strerror}") from None
            if not value:
                raise SecretError(f"imap.password_file {path} is empty")
            return value
        return _run_secret_command(self.password_command, "password_command")


@dataclass(frozen=True)
class DatabaseSettings:
    """Where claims and messages are kept."""

    url: str = "sqlite:///pipeline.db"


@dataclass(frozen=True)
class SellerSettings:
    """Who the seller is and the playbook's numbers."""

    store_name: str
    from_address: str
    response_days: int = 7
    refund_margin_hours: int = 24
    recognized_carriers: tuple[str, ...] = RECOGNIZED_CARRIERS
    language: str = "en"


@dataclass(frozen=True)
class DraftSettings:
    """Where reply templates come from; `templates_dir` overrides single bundled files."""

    templates_dir: str = ""
    enabled: bool = True


@dataclass(frozen=True)
class ModelSettings:
    """Where rule models come from; `models_dir` overrides single bundled pattern files."""

    models_dir: str = ""


@dataclass(frozen=True)
class ProcessingSettings:
    """`parallel`: a big batch (a backfill, a catch-up) is understood in worker processes, one per core but one."""

    parallel: bool = True


@dataclass(frozen=True)
class TrustSettings:
    """When Amazon-looking mail counts as Amazon's: `strict` asks for proof (a DKIM signature of Amazon's that
    we verify, or a pass from a server in `authserv_ids`); `lenient` only for an Amazon sender domain that no
    check failed (for servers that give no proof and networks without DNS)."""

    mode: str = "strict"
    authserv_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogSettings:
    """Log level and format (`text` for a terminal, `json` for servers)."""

    level: str = "INFO"
    format: str = "text"


@dataclass(frozen=True)
class Settings:
    """The whole configuration, as read from one TOML file."""

    imap: ImapSettings
    seller: SellerSettings
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    drafts: DraftSettings = field(default_factory=DraftSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    processing: ProcessingSettings = field(default_factory=ProcessingSettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: Path | None = None


SECTIONS: dict[str, type] = {
    "imap": ImapSettings,
    "database": DatabaseSettings,
    "seller": SellerSettings,
    "drafts": DraftSettings,
    "models": ModelSettings,
    "trust": TrustSettings,
    "processing": ProcessingSettings,
    "log": LogSettings,
}
REQUIRED_SECTIONS = ("imap", "seller")


def load_settings(path: Path | str | None = None) -> Settings:
    """Read and validate the config file; raise ConfigError naming the file and key on any problem."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (write a sample with `pipeline init`)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return settings_from_dict(raw, path)


def settings_from_dict(raw: dict[str, Any], path: Path) -> Settings:
    """Validate an already-parsed TOML document; see load_settings."""
    for name in raw:
        if name not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{name}] ({_expected(name, SECTIONS)})")
        if not isinstance(raw[name], dict):
            raise ConfigError(f"{path}: [{name}] must be a table, got {_type_name(raw[name])}")
    for name in REQUIRED_SECTIONS:
        if name not in raw:
            raise ConfigError(f"{path}: missing section [{name}]")
    sections = {name: _build_section(path, name, cls, raw.get(name, {})) for name, cls in SECTIONS.items()}
    settings = Settings(source=path, **sections)
    _check_semantics(path, settings)
    return _resolve_relative_paths(settings, path)


def _build_section(path: Path, section: str, cls: type, values: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{path}: unknown key [{section}] {key} ({_expected(key, known)})")
    kwargs: dict[str, Any] = {}
    for name, spec in known.items():
        if name not in values:
            if _is_required(spec):
                raise ConfigError(f"{path}: missing key [{section}] {name} (expected {_describe(spec.type)})")
            continue
        kwargs[name] = _coerce(path, section, name, spec.type, values[name])
    return cls(**kwargs)


def _expected(name: str, choices: Iterable[str]) -> str:
    """`did you mean X?` for a near miss, else the list of what is allowed."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.75)
    return f"did you mean {close[0]}?" if close else f"expected one of: {', '.join(choices)}"


def _describe(type_name: Any) -> str:
    kind = str(type_name)
    return {"str": "a string", "bool": "true or false", "int": "an integer", "float": "a number"}.get(
        kind, "a list of strings" if kind.startswith("tuple[str") else kind
    )


def _is_required(spec: Any) -> bool:
    from dataclasses import MISSING

    return spec.default is MISSING and spec.default_factory is MISSING


def _coerce(path: Path, section: str, key: str, type_name: Any, value: Any) -> Any:
    where = f"{path}: [{section}] {key}"
    kind = str(type_name)
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_type_name(value)}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_type_name(value)}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_type_name(value)}")
        if value < 0:
            raise ConfigError(f"{where}: expected a number >= 0, got {value}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {_type_name(value)}")
        if value <= 0:
            raise ConfigError(f"{where}: expected a number > 0, got {value}")
        return float(value)
    if kind.startswith("tuple[str"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {_type_name(value)}")
        return tuple(value)
    raise AssertionError(f"unhandled config type {kind}")  # a new field of an unknown type: our bug


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _check_semantics(path: Path, settings: Settings) -> None:
    imap = settings.imap
    for key in ("host", "username"):
        if not getattr(imap, key).strip():
            raise ConfigError(f"{path}: [imap] {key}: expected a non-empty string, got string ''")
    if not 1 <= imap.batch_size <= 10000:
        raise ConfigError(f"{path}: [imap] batch_size: expected 1 to 10000, got {imap.batch_size}")
    if imap.security not in SECURITY_MODES:
        raise ConfigError(
            f"{path}: [imap] security: expected one of {', '.join(SECURITY_MODES)}, got {imap.security!r}"
        )
    if imap.security == "plain" and not is_loopback(imap.host):
        raise ConfigError(
            f'{path}: [imap] security: "plain" sends the password unencrypted and is only allowed '
            f'to a loopback host, not {imap.host!r}; use "ssl" or "starttls"'
        )
    sources = [
        k for k in ("password_env", "password_file", "password_command", "oauth2_token_command") if getattr(imap, k)
    ]
    if not sources:
        raise ConfigError(
            f"{path}: [imap] needs one of password_env, password_file, password_command or oauth2_token_command"
        )
    if len(sources) > 1:
        raise ConfigError(f"{path}: [imap] give only one of {', '.join(sources)}")
    if imap.port > 65535:
        raise ConfigError(f"{path}: [imap] port: expected 1-65535, got {imap.port}")
    if settings.trust.mode not in TRUST_MODES:
        raise ConfigError(
            f"{path}: [trust] mode: expected one of {', '.join(TRUST_MODES)}, got {settings.trust.mode!r}"
        )
    if settings.log.format not in LOG_FORMATS:
        raise ConfigError(
            f"{path}: [log] format: expected one of {', '.join(LOG_FORMATS)}, got {settings.log.format!r}"
        )
    if settings.log.level.upper() not in LOG_LEVELS:
        raise ConfigError(f"{path}: [log] level: expected one of {', '.join(LOG_LEVELS)}, got {settings.log.level!r}")
    if settings.seller.response_days < 1:
        raise ConfigError(f"{path}: [seller] response_days: expected at least 1, got {settings.seller.response_days}")
    if "@" not in settings.seller.from_address:
        raise ConfigError(
            f"{path}: [seller] from_address: expected an email address, got {settings.seller.from_address!r}"
        )


def _resolve_relative_paths(settings: Settings, path: Path) -> Settings:
    """Relative paths in the file are relative to the file, so the service finds them from any cwd."""
    from dataclasses import replace

    base = path.resolve().parent
    url = settings.database.url
    relative_sqlite = re.match(r"(sqlite(?:\+\w+)?:///)(?!/)(?!:memory:)(.+)", url)
    if relative_sqlite:
        url = relative_sqlite.group(1) + str(base / Path(relative_sqlite.group(2)).expanduser())

    def rel(value: str) -> str:
        return str(base / Path(value).expanduser()) if value and not Path(value).expanduser().is_absolute() else value

    return replace(
        settings,
        database=replace(settings.database, url=url),
        imap=replace(settings.imap, password_file=rel(settings.imap.password_file), ca_file=rel(settings.imap.ca_file)),
        drafts=replace(settings.drafts, templates_dir=rel(settings.drafts.templates_dir)),
        models=replace(settings.models, models_dir=rel(settings.models.models_dir)),
    )


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses: the only hosts plain IMAP may talk to."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _run_secret_command(command: str, key: str) -> str:
    try:
        result = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise SecretError(f"imap.{key} could not be run: {exc}") from None
    if result.returncode != 0:
        # stderr is not echoed: a failing secret helper may print parts of what it guards
        raise SecretError(f"imap.{key} exited with status {result.returncode}")
    value = result.stdout.strip()
    if not value:
        raise SecretError(f"imap.{key} printed nothing")
    return value


SAMPLE_CONFIG = """\
# pipeline configuration. Relative paths are relative to this file.

[imap]
host = "imap.example.com"
# port = 993                       # default: 993 for ssl, 143 for starttls/plain
security = "ssl"                   # ssl | starttls | plain (plain only to a loopback host)
username = "claims@example.com"
# Exactly one way to get the secret; it never goes on the command line or into logs:
password_env = "PIPELINE_IMAP_PASSWORD"
# password_file = "/etc/pipeline/imap-password"
# password_command = "pass show imap/claims"
# oauth2_token_command = "oauth2-token claims@example.com"   # XOAUTH2 (Gmail, Microsoft 365)
# ca_file = "/etc/ssl/certs/my-ca.pem"                      # extra CA to trust for the server certificate
inbox = "INBOX"
# folders = ["INBOX", "Amazon"]    # folders to watch; default: just the inbox
drafts = ""                        # empty: find the \\Drafts special-use folder
# sent = ""                        # empty: find the \\Sent special-use folder
# timeout = 30                     # seconds for connect and every read
# poll_interval = 60               # seconds between polls when the server has no IDLE

[database]
url = "sqlite:///pipeline.db"      # or "postgresql+psycopg://user@host/dbname"

[seller]
store_name = "Acme Store"
from_address = "claims@example.com"
response_days = 7                  # when a notification states no deadline
refund_margin_hours = 24           # raise refund_needed this long before the deadline
recognized_carriers = ["UPS", "USPS", "FedEx", "DHL", "Amazon Logistics", "Royal Mail",
                       "China Post", "Yanwen", "YunExpress", "4PX"]
# language = "en"                  # draft language when the marketplace does not decide it

[drafts]
# templates_dir = "my-templates"   # same layout as templates/: <lang>/<strategy>.txt.j2 overrides single files

[trust]
mode = "strict"                    # only mail Amazon provably sent (DKIM) decides a claim; "lenient" trusts the domain
# authserv_ids = ["mx.example.com"]  # your server's Authentication-Results ids to believe (`pipeline check` lists them)

[processing]
parallel = true                    # understand big batches (backfills) on every core but one

[log]
level = "INFO"
format = "text"                    # text | json
"""


def write_sample(path: Path) -> None:
    """Write the commented sample config; refuse to overwrite an existing file."""
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(SAMPLE_CONFIG)
    except FileExistsError:
        raise ConfigError(f"{path}: already exists; not overwriting it") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror}") from None
