"""A deployed site's `site.yaml`: who it is, where the SuperLink is, its keys, data and policy."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedsafe.client.approval import ApprovedCode, parse_approved
from fedsafe.client.policy import SitePolicy, load_policy
from fedsafe.common.config import ExperimentConfig
from fedsafe.common.crypto.pki import KeyFileError, load_sealing_public_key
from fedsafe.common.data.base import SiteData
from fedsafe.common.errors import ConfigError, DataError
from fedsafe.common.release_policy import DEPLOYED_DEFAULT, ReleasePolicy

__all__ = [
    "SiteConfig",
    "load_site_config",
    "parse_address",
    "SITE_KEYS",
    "REQUIRED_KEYS",
    "PATH_KEYS",
]

# Every key a site.yaml may hold; anything else is a typo and an error.
REQUIRED_KEYS = (
    "site",
    "superlink",
    "ca_cert",
    "auth_key",
    "signing_key",
    "data",
    "schema",
    "dataset_id",
    "budget_store",
    "policy",
)
OPTIONAL_KEYS = ("runtime_api", "server_sealing_pub", "release", "approved_code")
SITE_KEYS = REQUIRED_KEYS + OPTIONAL_KEYS
# The share of its rows a deployed site holds out, whatever a run asks: near 1 a coordinator
# could leave a single chosen record on the training side.
TEST_FRACTION_RANGE = (0.05, 0.5)
# Keys whose value is a path; relative paths are read from the site.yaml's own folder.
PATH_KEYS = ("ca_cert", "auth_key", "signing_key", "data", "schema", "budget_store")
_MUST_EXIST = ("ca_cert", "auth_key", "signing_key", "data", "schema", "server_sealing_pub")
_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")


def parse_address(value: object, *, key: str, source: str) -> tuple[str, int]:
    """`host:port` -> (host, port); ConfigError names the key and file otherwise."""
    allowed = "'host:port' with a DNS name or IP address and a port in 1..65535"
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(key, value, allowed, source=source)
    host, _, port_text = value.rpartition(":")
    if not _HOST.fullmatch(host) or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(key, value, allowed, source=source)
    return host, int(port_text)


@dataclass(frozen=True)
class SiteConfig:
    """Everything a site's SuperNode and ClientApp need, validated and with absolute paths.

    `server_sealing_key` is the ServerApp's X25519 public key as this site pinned it
    (site.yaml key `server_sealing_pub`): updates are sealed to it, never to a key the
    relay sends. The ClientApp receives only the path of site.yaml (node config
    `site-config`) and rebuilds this object itself, so the data path, keys and policy
    never travel through Flower and the server cannot change them.
    """

    path: Path
    name: str
    superlink: str
    ca_cert: Path
    auth_key: Path
    signing_key: Path
    data: Path
    schema: Path
    dataset_id: str
    budget_store: Path
    policy: SitePolicy
    runtime_api: str | None = None
    server_sealing_key: Path | None = None
    approved_code: ApprovedCode = ApprovedCode()  # `fedsafe site approve`; see client/approval.py
    release: ReleasePolicy = DEPLOYED_DEFAULT

    @property
    def keys_dir(self) -> Path:
        """The folder of the site's keys, where the budget store's signed head is kept."""
        return self.signing_key.parent

    def load_data(self, cfg: ExperimentConfig) -> SiteData:
        """This site's train/held-out arrays from its own file, checked against its schema.

        Each record is encoded by the schema's declared ranges alone. The split is keyed by a
        secret derived from this site's signing key, never by the run's seed: the coordinator
        cannot work out which side any record lands on. The coordinator's test_fraction is
        accepted only within [0.05, 0.5].
        """
        from fedsafe.common.data.site_file import site_data_from_file

        fraction = cfg.dataset.test_fraction
        if not TEST_FRACTION_RANGE[0] <= fraction <= TEST_FRACTION_RANGE[1]:
            raise DataError(
                f"site {self.name} holds out between {TEST_FRACTION_RANGE[0]:g} and "
                f"{TEST_FRACTION_RANGE[1]:g} of its rows; the run asks for "
                f"dataset.test_fraction={fraction:g}"
            )
        return site_data_from_file(
            self.data,
            self.schema,
            test_fraction=fraction,
            site=self.name,
            split_key=self.split_key(),
        )

    def split_key(self) -> bytes:
        """32 secret bytes for the held-out split, derived from the site's signing key."""
        secret = self.signing_key.read_bytes()
        return hashlib.blake2b(secret, digest_size=32, person=b"fedsafe-split-v1").digest()


def _read(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "site config", source, "an existing site.yaml file", source=source
        ) from None
    except IsADirectoryError:
        raise ConfigError("site config", source, "a file, not a folder", source=source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError("<document>", source, f"valid YAML ({err})", source=source) from None
    if not isinstance(data, dict):
        raise ConfigError("<root>", data, f"a mapping with keys {list(SITE_KEYS)}", source=source)
    return data


def _check_keys(data: Mapping[str, Any], source: str) -> None:
    for key in data:
        if key not in SITE_KEYS:
            close = difflib.get_close_matches(str(key), SITE_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(str(key), data[key], f"one of {list(SITE_KEYS)}{hint}", source=source)
    for key in REQUIRED_KEYS:
        if data.get(key) is None:
            raise ConfigError(key, None, f"a value (required key; see {_hint(key)})", source=source)


def _hint(key: str) -> str:
    return {
        "site": "the site's name, as in its key files",
        "superlink": "the coordinator's Fleet API 'host:port'",
        "ca_cert": "the CA certificate the coordinator sent (ca.pem)",
        "auth_key": "auth.key from `fedsafe site init`",
        "signing_key": "signing.key from `fedsafe site init`",
        "data": "the site's CSV or Parquet file",
        "schema": "the schema YAML every site agreed",
        "dataset_id": "a stable name for this data set in the budget store",
        "budget_store": "the site's budget store file (SQLite)",
        "policy": "policy.max_epsilon at least",
    }[key]


def _string(data: Mapping[str, Any], key: str, source: str, allowed: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value.strip() or value.strip() != value:
        raise ConfigError(key, value, allowed, source=source)
    return value


def _path(data: Mapping[str, Any], key: str, base: Path, source: str) -> Path:
    value = data[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            key, value, "a file path (relative to the site.yaml folder)", source=source
        )
    path = Path(value).expanduser()
    resolved = (path if path.is_absolute() else base / path).resolve()
    if key in _MUST_EXIST and not resolved.is_file():
        raise ConfigError(key, value, f"an existing file ({resolved} not found)", source=source)
    if key == "budget_store" and not resolved.parent.is_dir():
        raise ConfigError(
            key, value, f"a path in an existing folder ({resolved.parent} not found)", source=source
        )
    return resolved


def _policy(value: Any, source: str) -> SitePolicy:
    try:
        return load_policy(value, source=source)
    except ConfigError as err:  # name the key as the site.yaml spells it
        key = err.key.replace("site_policy", "policy", 1)
        raise ConfigError(key, err.value, err.allowed, source=source) from None


def _release(value: Any, source: str) -> ReleasePolicy:
    """site.yaml `release:`; absent means the deployed default (no evaluation metrics leave)."""
    if value is None:
        return DEPLOYED_DEFAULT
    if not isinstance(value, Mapping):
        raise ConfigError(
            "release", value, "a mapping (evaluation: off|rounded|dp|exact, ...)", source=source
        )
    allowed = [f.name for f in dataclasses.fields(ReleasePolicy)]
    for key in value:
        if key not in allowed:
            raise ConfigError(f"release.{key}", value[key], f"one of {allowed}", source=source)
    try:
        # Unset keys keep the deployed defaults (e.g. max_evaluations), not the simulation's.
        return ReleasePolicy(**{**dataclasses.asdict(DEPLOYED_DEFAULT), **dict(value)})
    except ConfigError as err:
        raise ConfigError(err.key, err.value, err.allowed, source=source) from None
    except TypeError as err:
        raise ConfigError(
            "release", value, f"valid release settings ({err})", source=source
        ) from None


def load_site_config(path: Path) -> SiteConfig:
    """Read and check a site.yaml; every problem raises ConfigError naming key, value and file.

    Relative paths are resolved against the folder holding the site.yaml, so a site kit
    can be moved as a whole. Files the site needs to start (CA certificate, keys, data,
    schema) must exist; the budget store may not exist yet, but its folder must.
    """
    path = Path(path).expanduser().resolve()
    source = str(path)
    data = _read(path)
    _check_keys(data, source)
    name = _string(data, "site", source, f"a site name matching {_SITE_NAME.pattern}")
    if not _SITE_NAME.fullmatch(name):
        raise ConfigError("site", name, f"a site name matching {_SITE_NAME.pattern}", source=source)
    superlink = _string(data, "superlink", source, "'host:port' of the coordinator's Fleet API")
    parse_address(superlink, key="superlink", source=source)
    runtime_api = data.get("runtime_api")
    if runtime_api is not None:
        host, _ = parse_address(runtime_api, key="runtime_api", source=source)
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            raise ConfigError(
                "runtime_api",
                runtime_api,
                "a loopback 'host:port' (127.0.0.1): the SuperNode's Runtime API must not be "
                "reachable from outside the site",
                source=source,
            )
    dataset_id = _string(data, "dataset_id", source, "a non-empty name without surrounding spaces")
    base = path.parent
    paths = {key: _path(data, key, base, source) for key in PATH_KEYS}
    sealing = None
    if data.get("server_sealing_pub") is not None:
        sealing = _path(data, "server_sealing_pub", base, source)
        try:
            load_sealing_public_key(sealing)
        except KeyFileError as err:
            raise ConfigError(
                "server_sealing_pub",
                data["server_sealing_pub"],
                f"an X25519 public key ({err})",
                source=source,
            ) from None
    return SiteConfig(
        path=path,
        name=name,
        superlink=superlink,
        dataset_id=dataset_id,
        policy=_policy(data["policy"], source),
        runtime_api=runtime_api,
        server_sealing_key=sealing,
        release=_release(data.get("release"), source),
        approved_code=parse_approved(data.get("approved_code"), source=source),
        **paths,
    )
