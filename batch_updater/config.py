"""Settings: built-in defaults < TOML file < BATCH_UPDATER_* environment < command line.

Every setting is declared once in SETTINGS; loading collects every problem before
failing, so a user fixes a bad config in one pass. The secret (Basic password or
OAuth secret) comes from BATCH_UPDATER_PASSWORD, `password_file`, or `password` in
the file, never from a command-line option, and is wrapped in Secret so it cannot
reach a log or a report by accident.
"""

from __future__ import annotations

import os
import shlex
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from .errors import ConfigError
from .input.columns import IDENTIFIER_NAMES, MULTI_ACCOUNT_SOURCES, SOURCES
from .rows.cells import DATE_ORDERS, FIELD_TYPES, parse_bool

ENV_PREFIX = "BATCH_UPDATER_"
PASSWORD_ENV = ENV_PREFIX + "PASSWORD"
PROXY_PASSWORD_ENV = ENV_PREFIX + "PROXY_PASSWORD"
STATE_PASSWORD_ENV = ENV_PREFIX + "STATE_PASSWORD"


class Secret:
    """A string that never shows itself in repr, str or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class Setting:
    kind: str  # str | int | float | bool | path | choice
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    required: bool = False
    help: str = ""


SETTINGS: dict[tuple[str, str], Setting] = {
    ("api", "base_url"): Setting("str", required=True, help="API host, e.g. https://eu.api.capillarytech.com"),
    ("api", "source"): Setting("choice", "INSTORE", SOURCES),
    ("api", "account_id"): Setting("str", help="needed for multi-account sources"),
    ("api", "identifier_name"): Setting("choice", "mobile", IDENTIFIER_NAMES),
    ("api", "auth"): Setting("choice", "basic", ("basic", "oauth")),
    ("api", "username"): Setting("str", required=True, help="till code (basic) or OAuth key"),
    ("api", "password_file"): Setting("path"),
    ("api", "use_async"): Setting("bool", False),
    ("api", "ca_bundle"): Setting("path",
                                  help="PEM file of the CA certificates to trust (a private CA or a TLS proxy)"),
    ("api", "verify_tls"): Setting("bool", True,
                                   help="false (or --insecure) turns certificate checks off, with a warning"),
    ("api", "mode"): Setting("choice", "update", ("update", "upsert"),
                             help="upsert: a customer the update cannot find (8015) is added (POST /v2/customers)"),
    ("api", "add_requires"): Setting("names", help="upsert: columns a new customer must have (e.g."
                                                   ' ["loyaltyType"]): rows without them are invalid'),
    ("api", "fail_on_warnings"): Setting("bool", False,
                                         help="an update the API applied with warnings counts as an error (exit 1)"),
    ("api", "already_enrolled"): Setting("choice", "error", ("error", "success"),
                                         help="an enrolment the customer already has: an error, or a success"
                                              " with a warning (nightly full exports)"),
    ("api", "extended_fields"): Setting("names", help="the org's extended field names: others are refused"
                                                     " before sending"),
    ("api", "custom_fields"): Setting("names", help="the org's custom field names (fields.*): others are"
                                                   " refused before sending"),
    ("api", "proxy"): Setting("str", help="HTTP proxy URL, e.g. http://user@proxy:3128 (password from"
                                          f" {PROXY_PASSWORD_ENV}); default HTTPS_PROXY / HTTP_PROXY"),
    ("limits", "rate_per_minute"): Setting("int", 600, minimum=1),
    ("limits", "window_seconds"): Setting("float", 60.0, minimum=0.01),
    ("limits", "burst"): Setting("int", 1, minimum=1),
    ("limits", "concurrency"): Setting("int", 8, minimum=1),
    ("limits", "window_margin_seconds"): Setting(
        "float", 0.25, minimum=0.0,
        help="added to the rolling window: absorbs arrival jitter at the API (cost: margin/window of the rate)"),
    ("limits", "timeout_seconds"): Setting("float", 30.0, minimum=0.01, help="whole request, connect to last byte"),
    ("limits", "connect_timeout_seconds"): Setting("float", 10.0, minimum=0.01),
    ("limits", "read_timeout_seconds"): Setting(
        "float", None, minimum=0.01, help="longest silence while waiting for the answer; default: only the total"),
    ("limits", "backoff_base_seconds"): Setting("float", 0.5, minimum=0.001,
                                                help="first retry waits up to this; doubles per attempt"),
    ("limits", "backoff_cap_seconds"): Setting("float", 60.0, minimum=0.001),
    ("limits", "max_attempts"): Setting("int", 5, minimum=1),
    ("limits", "auth_failures_to_abort"): Setting("int", 3, minimum=1),
    ("limits", "consecutive_failures_to_abort"): Setting("int", 50, minimum=1),
    ("limits.create", "rate_per_minute"): Setting("int", 100, minimum=1,
                                                  help="the Add Customer API's own limit (upsert mode)"),
    ("limits.create", "window_seconds"): Setting("float", 60.0, minimum=0.01),
    ("output", "dir"): Setting("location", "reports", help="a folder, or an object-storage URL (s3://, gs://, az://)"),
    ("output", "mask_identifiers"): Setting("bool", False, help="mask identifiers in success.csv and skipped.csv"),
    ("output", "metrics_file"): Setting("path", help="Prometheus textfile-collector file: the run's metrics"),
    ("output", "job_name"): Setting("str", help="the metrics' job label; default the input file's stem"),
    ("storage", "endpoint_url"): Setting("str", help="object storage: an S3-compatible endpoint (MinIO, moto)"),
    ("storage", "region"): Setting("str", help="object storage: the bucket's region"),
    ("storage", "profile"): Setting("str", help="object storage: the AWS profile whose credentials to use"),
    ("storage", "local_dir"): Setting("path", help="staging folder of reports bound for an object-storage"
                                                  " [output] dir; default ~/.cache/batch-updater/outputs"),
    ("state", "path"): Setting("path", help="state store for --only-changed; default <output dir>/state.sqlite"),
    ("state", "only_changed"): Setting("bool", False, help="skip rows whose payload the API already acknowledged"),
    ("state", "url"): Setting("str", help="postgresql://user@host/db: jobs, locks and --only-changed state in"
                                          f" PostgreSQL (password from {STATE_PASSWORD_ENV}); default SQLite"),
    ("notify", "webhook_url"): Setting("str", help="Slack-compatible webhook, posted when a run has errors or aborts"),
    ("notify", "pushgateway_url"): Setting("str", help="Prometheus Pushgateway: the run's metrics are pushed there"),
    ("input", "chunk_rows"): Setting("int", 10_000, minimum=1),
    ("input", "encoding"): Setting("str", help="text encoding; default UTF-8 with or without BOM"),
    ("input", "delimiter"): Setting("str", help="CSV delimiter; default sniffed"),
    ("input", "sheet"): Setting("str", help="Excel sheet: a name, or its position from 1; default the first"),
    ("input", "timezone"): Setting("zone", "UTC", help="IANA zone for date-times written without an offset"),
    ("input", "max_invalid"): Setting("threshold", help="stop before sending when more rows are invalid: N or N%"),
    ("input", "duplicates"): Setting("choice", "sequential", ("sequential", "last", "reject"),
                                     help="several rows for one customer: send all in order, the last, or none"),
    ("input", "min_rows"): Setting("int", 0, minimum=0,
                                   help="fewer data rows than this send nothing (exit 2): a broken export"),
    ("input", "default_country"): Setting("country", help="ISO 3166 country code (e.g. IN): mobile numbers in"
                                                          " any format are sent as country code + number"),
    ("input", "date_order"): Setting("order", "YMD", DATE_ORDERS,
                                     help="how dates are written: YMD (ISO), DMY (17/05/1990) or MDY (05/17/1990)"),
}
# `password` may sit in the file (with a permissions warning) but is not an option.
FILE_ONLY_KEYS = {("api", "password")}
TABLES = ("columns", "types", "values")
# What changes how a file is read and checked: a suggested command carries them (Config.command).
READING_SETTINGS = (("input", "encoding"), ("input", "delimiter"), ("input", "sheet"), ("input", "timezone"),
                    ("input", "default_country"), ("input", "date_order"), ("api", "source"),
                    ("api", "identifier_name"), ("api", "account_id"), ("api", "mode"))
REQUIRED_TO_SEND = [key for key, setting in SETTINGS.items() if setting.required]


@dataclass(frozen=True)
class ApiSettings:
    base_url: str
    source: str
    account_id: str | None
    identifier_name: str
    auth: str
    username: str
    password_file: Path | None
    use_async: bool
    ca_bundle: Path | None = None
    verify_tls: bool = True
    mode: str = "update"              # or "upsert": add the customers the update cannot find
    add_requires: tuple[str, ...] | None = None  # upsert: columns a new customer must have
    fail_on_warnings: bool = False
    already_enrolled: str = "error"
    extended_fields: tuple[str, ...] | None = None  # None: any name (the org's list is not known)
    custom_fields: tuple[str, ...] | None = None
    password: Secret = field(default_factory=lambda: Secret(""), repr=False)
    proxy: str | None = field(default=None, repr=False)  # the URL without its password
    proxy_password: Secret = field(default_factory=lambda: Secret(""), repr=False)


@dataclass(frozen=True)
class LimitSettings:
    rate_per_minute: int
    window_seconds: float
    burst: int
    concurrency: int
    timeout_seconds: float
    connect_timeout_seconds: float
    max_attempts: int
    auth_failures_to_abort: int
    consecutive_failures_to_abort: int
    window_margin_seconds: float = 0.25
    read_timeout_seconds: float | None = None
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 60.0


@dataclass(frozen=True)
class CreateLimitSettings:
    """[limits.create]: the Add Customer API's budget, apart from the update's."""

    rate_per_minute: int = 100
    window_seconds: float = 60.0


@dataclass(frozen=True)
class OutputSettings:
    dir: Path  # for an object-storage URL, the local staging folder (see storage.staging_dir)
    mask_identifiers: bool = False
    metrics_file: Path | None = None
    job_name: str | None = None
    url: str | None = None  # an object-storage [output] dir: reports are uploaded there


@dataclass(frozen=True)
class StorageSettings:
    """[storage]: how to reach object storage. Credentials come from the environment, the
    AWS profile or the instance profile, never from here."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    local_dir: Path | None = None


@dataclass(frozen=True)
class ValueMap:
    """[values."<column>"]: the column's values rewritten before validation (keys in any case)."""

    pairs: tuple[tuple[str, str], ...]  # (key, value to send), in the file's order
    strict: bool = False                # a value neither a key nor a target is invalid


@dataclass(frozen=True)
class InputSettings:
    chunk_rows: int
    encoding: str | None
    delimiter: str | None
    sheet: str | None = None
    timezone: str = "UTC"
    max_invalid: str | None = None       # "100" rows or "5%" of the non-blank rows
    duplicates: str = "sequential"
    min_rows: int = field(default=0, repr=False)  # repr: the job identity; it changes no payload
    # [types]: canonical fields.* / extendedFields.* name -> a FIELD_TYPES name
    # or a tuple of allowed values. Here, not in Config, so the job identity covers it.
    types: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    # What rows/rewrite.py rewrites before validation. Out of the dataclass's repr: see __repr__.
    default_country: str | None = field(default=None, repr=False)   # ISO 3166 alpha-2, for mobiles
    date_order: str = field(default="YMD", repr=False)
    values: Mapping[str, ValueMap] = field(default_factory=dict, repr=False)  # canonical column -> map

    def __repr__(self) -> str:
        """The job identity hashes this text: the rewriting settings join it only when set,
        so the jobs of files that do not use them keep the identities earlier versions gave them."""
        shown = [f"{name}={value!r}" for name, value in (("default_country", self.default_country),
                 ("date_order", self.date_order if self.date_order != "YMD" else None),
                 ("values", dict(self.values) or None)) if value is not None]
        return self.shaping_text()[:-1] + "".join(f", {part}" for part in shown) + ")"

    def shaping_text(self) -> str:
        """What the --only-changed digests hash: the settings that shape a payload from its cells.
        Not the rewriting settings: the digests hash the cells as rewritten, so a customer sent
        as 919800000001 is unchanged whether the file wrote it so or as +91 98000 00001."""
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr]
        return f"{type(self).__qualname__}({', '.join(shown)})"


@dataclass(frozen=True)
class StateSettings:
    path: Path | None
    only_changed: bool
    url: str | None = None  # PostgreSQL, without its password; None: SQLite files
    password: Secret = field(default_factory=lambda: Secret(""), repr=False)


@dataclass(frozen=True)
class NotifySettings:
    webhook_url: str | None  # Slack-compatible; it carries a token, so it is never shown
    pushgateway_url: str | None = None  # may carry user:password: never shown either


@dataclass(frozen=True)
class Config:
    api: ApiSettings
    limits: LimitSettings
    output: OutputSettings
    input: InputSettings
    columns: Mapping[str, str] = field(default_factory=dict)
    notify: NotifySettings = field(default_factory=lambda: NotifySettings(None))
    state: StateSettings = field(default_factory=lambda: StateSettings(None, False))
    create_limits: CreateLimitSettings = field(default_factory=CreateLimitSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)

    @property
    def state_path(self) -> Path:
        return self.state.path or Path(self.output.dir) / "state.sqlite"
    warnings: tuple[str, ...] = ()
    path: Path | None = None

    def command(self, *words: str | Path) -> str:
        """A batch-updater command line to suggest, runnable as written: with this --config
        and the settings that change how the file is read and checked (wherever they came
        from: a command-line option is not in the config file)."""
        line = ["batch-updater", *map(str, words)] + (["--config", str(self.path)] if self.path else [])
        for section, key in READING_SETTINGS:
            value = getattr(getattr(self, section), key)
            if value is not None and value != SETTINGS[(section, key)].default:
                line += ["--" + key.replace("_", "-"), str(value)]  # each has an option of that name
        return shlex.join(line)

    def public_dict(self) -> dict[str, Any]:
        """The settings without the secret, for summary.json and logs."""
        out: dict[str, Any] = {}
        for section in ("api", "limits", "create_limits", "output", "input", "state"):
            values = getattr(self, section).__dict__
            out[section] = {k: (str(v) if isinstance(v, Path) else v)
                            for k, v in values.items() if k not in ("password", "proxy_password")}
        out["api"]["proxy"] = masked_url(self.api.proxy)
        out["state"]["url"] = masked_url(self.state.url)
        out["columns"] = dict(self.columns)
        return out


def masked_url(url: str | None) -> str | None:
    """A URL as messages and summary.json show it: its credentials (user and password) as ***."""
    if not url:
        return url
    scheme, separator, rest = url.partition("://") if "://" in url else ("", "", url)  # host:port too
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{separator}{authority}{slash}{path}"


def load_config(path: str | os.PathLike | None = None, *,
                overrides: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None, sending: bool = True) -> Config:
    """Build a Config from the layers; raise ConfigError listing every problem.

    `overrides` holds command-line values keyed "section.key" (None = not given).
    `sending=False` (validate, --dry-run) needs no password, base URL or username:
    a file can be checked on a laptop without credentials.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    warnings: list[str] = []
    raw = _read_toml(Path(path), problems, warnings) if path else {}
    if raw is None:  # unreadable or not TOML: the settings it holds are unknown, say only that
        raise ConfigError(problems)
    values = {key: s.default for key, s in SETTINGS.items()}
    origin = {key: f"[{key[0]}] {key[1]}" for key in SETTINGS}

    for section, table in raw.items():
        if section in TABLES:
            continue
        for key, value in table.items():
            values[(section, key)] = value
            origin[(section, key)] = f"{path} [{section}] {key}"
    for (section, key) in SETTINGS:
        env_name = f"{ENV_PREFIX}{section}_{key}".upper().replace(".", "_")
        if env_name in environ:
            values[(section, key)] = environ[env_name]
            origin[(section, key)] = env_name
    for dotted, value in (overrides or {}).items():
        if value is not None:
            section, name = dotted.rsplit(".", 1)  # "limits.create.rate_per_minute": a sub-table's key
            values[(section, name)] = value
            sub = section.partition(".")[2]
            origin[(section, name)] = _RENAMED_OPTIONS.get(dotted) or (
                "--" + (f"{sub}-" if sub else "") + name.replace("_", "-"))

    typed = {key: _coerce(SETTINGS[key], values[key], origin[key], problems, required=sending)
             for key in SETTINGS if (key in values)}
    for key in REQUIRED_TO_SEND:
        typed[key] = typed[key] or ""  # not sending: may be unset
    password = _password(raw, typed, environ, problems if sending else [])
    typed[("api", "proxy")], proxy_password = _proxy(typed.get(("api", "proxy")), origin[("api", "proxy")],
                                                     environ, problems)
    typed[("state", "url")], state_password = _state_url(typed.get(("state", "url")), origin[("state", "url")],
                                                         environ, problems)
    columns = _columns(raw.get("columns", {}), problems)
    types = _types(raw.get("types", {}), problems)
    value_maps = _value_maps(raw.get("values", {}), problems)
    _cross_checks(typed, problems)
    _canonical_add_requires(typed, problems)
    _tls_checks(typed, problems, warnings)
    if problems:
        raise ConfigError(problems)
    storage = StorageSettings(**_section(typed, "storage"))
    return Config(
        api=ApiSettings(**_section(typed, "api"), password=password, proxy_password=proxy_password),
        limits=LimitSettings(**_section(typed, "limits")),
        output=_output(_section(typed, "output"), storage),
        input=InputSettings(**_section(typed, "input"), types=types, values=value_maps),
        notify=NotifySettings(**_section(typed, "notify")),
        state=StateSettings(**_section(typed, "state"), password=state_password),
        create_limits=CreateLimitSettings(**_section(typed, "limits.create")),
        storage=storage,
        columns=columns,
        warnings=tuple(warnings),
        path=Path(path) if path else None,
    )


def _read_toml(path: Path, problems: list[str], warnings: list[str]) -> dict[str, Any] | None:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{path}: config file not found")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read config file ({exc.__class__.__name__}: {exc})")
        return None
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML ({exc})")
        return None
    known_sections = {s for s, _ in SETTINGS} | set(TABLES)
    _flatten_subtables(raw, known_sections)
    for section, table in list(raw.items()):
        if section not in known_sections or not isinstance(table, dict):
            problems.append(f"{path}: unknown section [{section}]"
                            f" (known: {', '.join(sorted(known_sections))})")
            raw.pop(section)
            continue
        if section in TABLES:
            continue
        for key in list(table):
            if (section, key) not in SETTINGS and (section, key) not in FILE_ONLY_KEYS:
                known = sorted(k for s, k in SETTINGS if s == section)
                problems.append(f"{path}: unknown key '{key}' in [{section}] (known: {', '.join(known)})")
                table.pop(key)
    if _holds_a_password(raw) and _readable_by_others(path):
        warnings.append(f"{path} holds a password and is readable by other users:"
                        f" run chmod 600 {shlex.quote(str(path))}")
    return raw


def _holds_a_password(raw: dict[str, Any]) -> bool:
    """[api] password, or a URL with one (user:password@): the proxy's or the state database's."""
    urls = (raw.get("api", {}).get("proxy"), raw.get("state", {}).get("url"))
    return "password" in raw.get("api", {}) or any(
        isinstance(url, str) and ":" in url.partition("://")[2].rpartition("@")[0] for url in urls)


def _flatten_subtables(raw: dict[str, Any], known_sections: set[str]) -> None:
    """[limits.create] arrives as raw["limits"]["create"]: make it a section of its own."""
    for section, table in list(raw.items()):
        if not isinstance(table, dict):
            continue
        for key, value in list(table.items()):
            if isinstance(value, dict) and f"{section}.{key}" in known_sections:
                raw[f"{section}.{key}"] = table.pop(key)


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False


def _coerce(setting: Setting, value: Any, origin: str, problems: list[str], required: bool = True) -> Any:
    if value is None or value == "":
        if setting.required and required:
            problems.append(f"{origin}: required setting is missing")
        return None if setting.kind != "bool" else bool(setting.default)
    convert: Callable[[Any], Any] = _CONVERTERS[setting.kind]
    try:
        result = convert(value)
    except (TypeError, ValueError):
        problems.append(f"{origin}: expected {_KIND_NAMES[setting.kind]}, got {value!r}")
        return setting.default
    if setting.choices and result not in setting.choices:
        problems.append(f"{origin}: {result!r} is not one of {', '.join(setting.choices)}")
    if setting.minimum is not None and result < setting.minimum:
        problems.append(f"{origin}: must be at least {setting.minimum:g}, got {result!r}")
    return result


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    parsed = parse_bool(str(value).strip())
    if parsed is None:
        raise ValueError(value)
    return parsed


def _to_int(value: Any) -> int:
    if isinstance(value, (bool, float)):
        raise TypeError(value)
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    return float(value)


def _to_str(value: Any) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise TypeError(value)
    return str(value)


def _to_threshold(value: Any) -> str:
    """--max-invalid: a count of rows (`100`) or a share of the rows (`5%`)."""
    text = _to_str(value).strip().replace(" ", "")
    number = text[:-1] if text.endswith("%") else text
    if not number.replace(".", "", 1).isdigit() or (number.count(".") and not text.endswith("%")):
        raise ValueError(value)
    if text.endswith("%") and float(number) > 100:
        raise ValueError(value)
    return text


def _to_names(value: Any) -> tuple[str, ...]:
    """A list of names: a TOML array, or one text of comma-separated names (environment)."""
    if isinstance(value, str) and value.strip().startswith("["):
        import json

        value = json.loads(value)  # a TOML/JSON array in an environment variable
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise TypeError(value)
    names = tuple(_to_str(item).strip() for item in items)
    if not all(names):
        raise ValueError(value)
    return names


def _to_country(value: Any) -> str:
    import phonenumbers

    text = _to_str(value).strip().upper()
    if text not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(value)
    return text


def _to_zone(value: Any) -> str:
    from .rows.cells import zone

    text = _to_str(value).strip()
    zone(text)  # ValueError when unknown
    return text


_RENAMED_OPTIONS = {"output.dir": "--output-dir"}  # the options not named after their setting


def _to_location(text: str) -> str | Path:
    """A local folder, or a URL of object storage this tool can write to."""
    if "://" not in text:
        return Path(text).expanduser()
    from .storage import is_url

    if not is_url(text):
        raise ValueError
    return text


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": _to_str, "choice": _to_str, "int": _to_int, "float": _to_float,
    "bool": _to_bool, "path": lambda v: Path(_to_str(v)).expanduser(),
    "location": lambda v: _to_location(_to_str(v)),
    "threshold": _to_threshold, "zone": _to_zone, "names": _to_names,
    "country": _to_country, "order": lambda v: _to_str(v).strip().upper(),
}
_KIND_NAMES = {"str": "text", "choice": "text", "int": "a whole number", "float": "a number",
               "bool": "true or false", "path": "a path",
               "location": "a folder or an object-storage URL (s3://, gs://, az://)",
               "threshold": "a number of rows or a percentage (e.g. 100 or 5%)",
               "zone": "an IANA time zone name (e.g. UTC, Asia/Kolkata, Europe/London)",
               "names": 'a list of names (e.g. ["city", "gender"])',
               "country": "a two-letter country code (ISO 3166 alpha-2, e.g. IN, US, GB)", "order": "text"}


def _password(raw: dict, typed: dict, environ: Mapping[str, str], problems: list[str]) -> Secret:
    if environ.get(PASSWORD_ENV):
        return Secret(environ[PASSWORD_ENV])
    password_file = typed.get(("api", "password_file"))
    if password_file:
        try:
            return Secret(Path(password_file).read_text(encoding="utf-8").strip())
        except OSError as exc:
            problems.append(f"[api] password_file {password_file}: cannot read ({exc.strerror})")
            return Secret("")
    in_file = raw.get("api", {}).get("password")
    if isinstance(in_file, str) and in_file:
        return Secret(in_file)
    problems.append(f"no password: set {PASSWORD_ENV} or [api] password_file")
    return Secret("")


def _proxy(text: str | None, origin: str, environ: Mapping[str, str],
           problems: list[str]) -> tuple[str | None, Secret]:
    """[api] proxy without its password, and the password: BATCH_UPDATER_PROXY_PASSWORD, else the
    one in the URL. Messages show the URL with its credentials masked."""
    password = Secret(environ.get(PROXY_PASSWORD_ENV, ""))
    if not text:
        return None, password
    text = text.strip()
    parts = _split_url(text if "://" in text else "http://" + text)  # host:port is http, as curl reads it
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        problems.append(f"{origin}: expected a proxy URL such as http://proxy.example.com:3128 or"
                        f" http://user@proxy.example.com:3128, got {masked_url(text)!r}")
        return None, password
    netloc, password = _password_apart(parts.netloc, password)
    return f"{parts.scheme}://{netloc}", password


def _state_url(text: str | None, origin: str, environ: Mapping[str, str],
               problems: list[str]) -> tuple[str | None, Secret]:
    """[state] url without its password, and the password: BATCH_UPDATER_STATE_PASSWORD, else
    the one in the URL (the same rule as the proxy's)."""
    password = Secret(environ.get(STATE_PASSWORD_ENV, ""))
    if not text:
        return None, password
    parts = _split_url(text.strip())
    if parts is None or parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        problems.append(f"{origin}: expected a PostgreSQL URL such as postgresql://user@host:5432/dbname,"
                        f" got {masked_url(text.strip())!r}")
        return None, password
    netloc, password = _password_apart(parts.netloc, password)
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}", password


def _split_url(text: str) -> SplitResult | None:
    """`text`'s parts, or None when it is no URL (a port that is not a number, say)."""
    try:
        parts = urlsplit(text)
        _ = parts.port  # ValueError when the port is not a number
    except ValueError:
        return None
    return parts


def _password_apart(netloc: str, variable: Secret) -> tuple[str, Secret]:
    """`user:password@host` as `user@host`, and the password: the variable's, else the URL's."""
    userinfo, at, host = netloc.rpartition("@")
    user, _, in_url = userinfo.partition(":")
    return f"{user}{at}{host}", variable or Secret(unquote(in_url))


def _value_maps(table: Any, problems: list[str]) -> dict[str, ValueMap]:
    """[values."extendedFields.gender"]: F = "Female", M = "Male", and optionally strict = true."""
    from .input.columns import canonical_name

    maps: dict[str, ValueMap] = {}
    for name, entries in table.items():
        where = f'[values."{name}"]'
        column = canonical_name(name)
        if column is None or not isinstance(entries, dict):
            hint = (f': quote the column name, [values."{name}.{next(iter(entries))}"]'
                    if isinstance(entries, dict) and entries and all(isinstance(v, dict) for v in entries.values())
                    else " (e.g. [values.\"extendedFields.gender\"] with F = \"Female\")")
            problems.append(f"{where}: '{name}' is not a column name{hint}" if column is None else
                            f"{where}: expected a table of values, got {entries!r}")
            continue
        value_map = _value_map(where, entries, problems)
        if value_map is not None:
            maps[column] = value_map
    return maps


def _value_map(where: str, entries: dict[str, Any], problems: list[str]) -> ValueMap | None:
    strict = entries.get("strict", False)
    if not isinstance(strict, bool):
        problems.append(f"{where} strict: expected true or false, got {strict!r}")
    pairs: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for key, value in entries.items():
        if key == "strict":
            continue
        folded = key.strip().lower()
        if not isinstance(value, str):
            problems.append(f"{where} {key!r}: expected the text to send (in quotes), got {value!r}")
        elif not folded:
            problems.append(f"{where}: an empty key matches nothing (empty cells are left alone)")
        elif folded in seen:
            problems.append(f"{where}: keys {seen[folded]!r} and {key!r} are the same (keys match in any case)")
        else:
            seen[folded] = key
            pairs.append((key.strip(), value.strip()))
    if all(key == "strict" for key in entries):
        problems.append(f"{where}: no values to rewrite (e.g. F = \"Female\")")
    return ValueMap(tuple(pairs), strict is True)


def _columns(table: Any, problems: list[str]) -> dict[str, str]:
    columns: dict[str, str] = {}
    for header, canonical in table.items():
        if not isinstance(canonical, str) or not canonical.strip():
            problems.append(f"[columns] '{header}': expected a canonical column name, got {canonical!r}")
            continue
        columns[header.strip().lower()] = canonical.strip()
    return columns


def _types(table: Any, problems: list[str]) -> dict[str, str | tuple[str, ...]]:
    """[types]: "extendedFields.dateOfBirth" = "date", "fields.size" = ["S", "M", "L"]."""
    types: dict[str, str | tuple[str, ...]] = {}
    for name, kind in table.items():
        family, _, rest = name.strip().partition(".")
        if family.lower() not in ("fields", "extendedfields") or not rest.strip():
            problems.append(f"[types] '{name}': only fields.<name> and extendedFields.<name> columns"
                            " take a type (the other columns' types are fixed)")
            continue
        key = ("fields." if family.lower() == "fields" else "extendedFields.") + rest.strip()
        if isinstance(kind, str) and kind.strip().lower() in FIELD_TYPES:
            types[key] = kind.strip().lower()
        elif isinstance(kind, list) and kind and all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                     and str(v).strip() for v in kind):
            types[key] = tuple(str(v).strip() for v in kind)
        else:
            problems.append(f"[types] '{name}': expected one of {', '.join(FIELD_TYPES)} or a list of"
                            f" allowed values, got {kind!r}")
    return dict(sorted(types.items()))


def _canonical_add_requires(typed: dict, problems: list[str]) -> None:
    """[api] add_requires names columns as headers may (any case): keep their canonical names."""
    from .input.columns import canonical_name

    names = typed.get(("api", "add_requires")) or ()
    unknown = [name for name in names if canonical_name(name) is None]
    if unknown:
        problems.append(f"[api] add_requires: {', '.join(map(repr, unknown))} is not a column name"
                        " (e.g. loyaltyType, firstName, extendedFields.city)")
    typed[("api", "add_requires")] = tuple(canonical_name(name) or name for name in names) or None


def _cross_checks(typed: dict, problems: list[str]) -> None:
    source = typed.get(("api", "source"))
    if source in MULTI_ACCOUNT_SOURCES and not typed.get(("api", "account_id")):
        problems.append(f"[api] source {source} is a multi-account source: set [api] account_id")
    margin, window = typed.get(("limits", "window_margin_seconds")), typed.get(("limits", "window_seconds"))
    if margin is not None and window is not None and margin >= window:
        problems.append(f"[limits] window_margin_seconds ({margin:g}) must be shorter than"
                        f" window_seconds ({window:g})")
    url = typed.get(("api", "base_url"))
    if url and not str(url).startswith(("http://", "https://")):
        problems.append(f"[api] base_url must start with http:// or https://, got {url!r}")


def _tls_checks(typed: dict, problems: list[str], warnings: list[str]) -> None:
    """A CA bundle must load; turning verification off is allowed, and said out loud."""
    bundle = typed.get(("api", "ca_bundle"))
    if typed.get(("api", "verify_tls")) is False:
        warnings.append(INSECURE_WARNING)
    elif bundle:
        import ssl

        if not Path(bundle).is_file():
            problems.append(f"[api] ca_bundle {bundle}: file not found (give the PEM file of the CA"
                            " certificates that signed the API's certificate)")
            return
        try:
            ssl.create_default_context(cafile=str(bundle))
        except (ssl.SSLError, OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            problems.append(f"[api] ca_bundle {bundle}: not a PEM file of CA certificates ({reason})")


INSECURE_WARNING = ("TLS certificate verification is off ([api] verify_tls = false or --insecure):"
                    " anyone on the network path can read the credentials and the customer data;"
                    " trust a private CA with [api] ca_bundle instead")


def _section(typed: dict, section: str) -> dict[str, Any]:
    return {key: value for (s, key), value in typed.items() if s == section}


def _output(values: dict[str, Any], storage: StorageSettings) -> OutputSettings:
    """An object-storage [output] dir: the reports are written to a local staging folder
    first, then uploaded (output/upload.py)."""
    if isinstance(values.get("dir"), str):
        from .storage import staging_dir

        return OutputSettings(**{**values, "dir": staging_dir(values["dir"], storage.local_dir),
                                 "url": values["dir"]})
    return OutputSettings(**values)
