"""Object storage through fsspec: s3:// (s3fs), gs:// (gcsfs), az:// (adlfs).

A filesystem for a URL and the [storage] settings, a description of an object (its
version and size: the job identity, known before the download ends), and one-line errors
naming the URL (never a credential) for what goes wrong. The fsspec packages are optional
extras, imported only when a URL needs them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import StorageSettings
from .errors import BatchUpdaterError, InputError, RunAborted

# scheme -> (the package fsspec needs, the extra that installs it)
SCHEMES = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
           "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure")}
DEFAULT_STAGING = Path("~/.cache/batch-updater/outputs")
# What names an object's content in each store's metadata, best first: a GCS generation and
# an Azure version change only with the content, an ETag also names it.
_S3, _GCS, _AZURE = ("ETag", "VersionId"), ("generation", "etag"), ("version_id", "etag")
VERSION_KEYS = {"s3": _S3, "gs": _GCS, "gcs": _GCS, "az": _AZURE, "abfs": _AZURE}


def is_url(location: str | Path) -> bool:
    """An object-storage URL (a scheme this module knows), not a local path."""
    text = str(location)
    return "://" in text and text.split("://", 1)[0].lower() in SCHEMES


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def bucket_path(url: str) -> str:
    """'s3://bucket/a/b/' -> 'bucket/a/b'."""
    return url.split("://", 1)[1].strip("/")


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(part.strip("/") for part in parts)])


def staging_dir(url: str, local_dir: Path | None) -> Path:
    """Where the reports bound for `url` are written first: <local_dir>/<bucket path>."""
    return (local_dir or DEFAULT_STAGING).expanduser() / scheme(url) / bucket_path(url)


def filesystem(url: str, settings: StorageSettings) -> Any:
    """The fsspec filesystem for `url`; a missing package names the extra to install."""
    package, extra = SCHEMES[scheme(url)]
    try:
        import fsspec

        __import__(package)
    except ImportError:
        raise BatchUpdaterError(f"{url}: {scheme(url)}:// URLs need the {package} package:"
                                f" pip install 'batch-updater[{extra}]'") from None
    return fsspec.filesystem(scheme(url), **_options(scheme(url), settings))


def _options(kind: str, settings: StorageSettings) -> dict[str, Any]:
    if kind != "s3":
        return {}
    options: dict[str, Any] = {}
    client: dict[str, Any] = {}
    if settings.endpoint_url:
        options["endpoint_url"] = settings.endpoint_url
    if settings.region:
        client["region_name"] = settings.region
    if settings.profile:
        options["profile"] = settings.profile
    if client:
        options["client_kwargs"] = client
    options["skip_instance_cache"] = True  # settings may differ between runs of one process (tests, Airflow)
    return options


@dataclass(frozen=True)
class Origin:
    """An input object as the job identity sees it: its URL, version and size."""

    url: str
    version: str  # the ETag (S3), generation (GCS) or version / ETag (Azure)
    size: int

    @property
    def name(self) -> str:
        return bucket_path(self.url).rsplit("/", 1)[-1]


def describe(url: str, fs: Any) -> Origin:
    """The object's version and size, from one metadata request."""
    with storage_errors(url, missing=InputError):
        info = fs.info(url)
    if info.get("type") == "directory":
        raise InputError(f"{url}: is a folder, not an object")
    version = next((str(info[key]) for key in VERSION_KEYS[scheme(url)] if info.get(key)), "")
    return Origin(url, version.strip('"'), int(info.get("size") or 0))


@contextmanager
def storage_errors(url: str, *, missing: type[BatchUpdaterError] = RunAborted) -> Iterator[None]:
    """One line naming `url` for what object storage refuses: `missing` (InputError, exit
    2, for an input) for no such bucket or key, RunAborted (exit 3) for the rest."""
    try:
        yield
    except BatchUpdaterError:
        raise
    except FileNotFoundError:
        raise missing(f"{url}: no such object or bucket") from None
    except PermissionError:
        raise RunAborted(f"{url}: access denied: check the credentials and the bucket's policy") from None
    except Exception as exc:
        raise RunAborted(f"{url}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    name = exc.__class__.__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound"):
        return ("no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, an AWS profile"
                " ([storage] profile) or an instance profile")
    if name == "FileExpired":  # s3fs reads with If-Match: the object was overwritten meanwhile
        return "the object changed while it was being read: run again with --restart to send its new content"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError"):
        return ("cannot reach the storage endpoint: check [storage] endpoint_url (in the --config given) and the"
                " network")
    text = (str(exc).strip().splitlines() or [name])[0]
    return f"{name}: {text[:200]}"
