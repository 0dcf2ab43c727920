"""The coordinator's `server.yaml`: TLS files, SuperLink addresses, workdir and run config."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedsafe.common.config import ExperimentConfig, from_flat, to_flat
from fedsafe.common.errors import ConfigError
from fedsafe.server.access.config import AccessConfig, parse_access

__all__ = [
    "ServerDeployConfig",
    "SiteEntry",
    "load_server_config",
    "SERVER_KEYS",
    "SERVER_YAML_EXAMPLE",
]

SERVER_KEYS = (
    "workdir",
    "tls",
    "fleet_api",
    "control_api",
    "control_api_remote",
    "app",
    "run",
    "sites",
    "access",
)
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_TLS_KEYS = ("ca_cert", "cert", "key")
_RUN_KEYS = ("submit", "config")
_SITE_KEYS = ("name", "auth_pub", "signing_pub")
# Run-config keys holding paths: resolved against the server.yaml folder like every path.
_RUN_PATH_KEYS = (
    "dataset.schema",
    "runs_dir",
    "compliance.site_keys_dir",
    "compliance.server_keys_dir",
    "compliance.consent_registry",
)
# Coordinator state the ServerApp reads, placed in the workdir unless server.yaml says otherwise.
_WORKDIR_DEFAULTS = {
    "compliance.site_keys_dir": "site-keys",
    "compliance.server_keys_dir": "keys",
    "compliance.consent_registry": "consent.sqlite",
}
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")

SERVER_YAML_EXAMPLE = """\
# fedsafe coordinator configuration (relative paths: from this file's folder)
workdir: coordinator            # SuperLink state, Flower home, staged app, runs, logs
tls:
  ca_cert: certs/ca/ca.pem      # `fedsafe certs init --dir certs/ca`
  cert: certs/server/server.pem # `fedsafe certs server --ca-dir certs/ca --out certs/server`
  key: certs/server/server.key
fleet_api: 0.0.0.0:9092         # SuperNodes connect here (gRPC, TLS, node authentication)
control_api: 127.0.0.1:9093     # Control + ServerApp runtime API (HTTPS); keep it on loopback
# control_api_remote: true      # needed to bind control_api beyond loopback (a warning at start)
run:
  submit: true                  # `fedsafe server start` submits the run with `flwr run`
  config:                       # dotted keys over fedsafe's defaults (common/config/)
    experiment.name: heart-deploy
    dataset.name: site_files
    dataset.schema: schema.yaml # the agreed schema: public metadata, no rows
    training.rounds: 5
sites:                          # enrolled at start (also: `fedsafe server enroll`)
  - {name: hospital-a, auth_pub: keys/hospital-a/auth.pub, signing_pub: keys/hospital-a/signing.pub}
"""


@dataclass(frozen=True)
class SiteEntry:
    """A site the coordinator enrolls: name, SuperNode auth key, attestation signing key."""

    name: str
    auth_pub: Path
    signing_pub: Path | None = None


@dataclass(frozen=True)
class ServerDeployConfig:
    """A validated server.yaml with absolute paths."""

    path: Path
    workdir: Path
    ca_cert: Path
    cert: Path
    key: Path
    fleet_api: str
    control_api: str
    app: Path | None
    submit: bool
    run_overrides: dict[str, Any]
    sites: tuple[SiteEntry, ...]
    access: AccessConfig | None = None  # the mTLS admin endpoint (server/access), if any

    @property
    def flwr_home(self) -> Path:
        """FLWR_HOME for every Flower process and CLI call of this coordinator."""
        return self.workdir / "flwr-home"

    @property
    def database(self) -> Path:
        """The SuperLink's state database: enrolments and runs survive a restart."""
        return self.workdir / "superlink.db"

    @property
    def site_keys_dir(self) -> Path:
        """Enrolled sites' Ed25519 signing keys as `<site>.pub`, where the ServerApp looks."""
        value = self.run_overrides.get("compliance.site_keys_dir")
        return Path(value) if value else self.workdir / "site-keys"

    @property
    def server_keys_dir(self) -> Path:
        """The ServerApp's signing and sealing keys; sites pin `sealing.pub` from here."""
        value = self.run_overrides.get("compliance.server_keys_dir")
        return Path(value) if value else self.workdir / "keys"

    @property
    def runs_dir(self) -> Path:
        """Where the ServerApp writes run folders (metrics.jsonl, summary.json, model.pt)."""
        value = self.run_overrides.get("runs_dir")
        return Path(value) if value else self.workdir / "runs"

    @property
    def control_api_is_loopback(self) -> bool:
        """Whether runs can be submitted only from this host (the default)."""
        return self.control_api.rpartition(":")[0] in _LOOPBACK

    @property
    def control_client_address(self) -> str:
        """The address the flwr CLI dials: a wildcard bind is reached on loopback."""
        host, _, port = self.control_api.rpartition(":")
        return f"{'127.0.0.1' if host in ('0.0.0.0', '[::]') else host}:{port}"

    def experiment(self) -> ExperimentConfig:
        """The run config as the ServerApp will see it (validated here, before anything starts)."""
        return from_flat(self.run_overrides, source=f"{self.path} (run.config)")


def _address(value: object, key: str, source: str) -> str:
    allowed = "'host:port' (IP address or DNS name, port 1..65535)"
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(key, value, allowed, source=source)
    host, _, port = value.rpartition(":")
    if not _HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(key, value, allowed, source=source)
    return value


def _known(data: dict[str, Any], allowed: tuple[str, ...], prefix: str, source: str) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{prefix}{key}", data[key], f"one of {list(allowed)}{hint}", source=source
            )


def _file(value: object, key: str, base: Path, source: str, *, must_exist: bool) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, value, "a path (relative to the server.yaml folder)", source=source)
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    if must_exist and not path.is_file():
        raise ConfigError(key, value, f"an existing file ({path} not found)", source=source)
    return path


def _mapping(value: object, key: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, value, "a mapping", source=source)
    return value


def _run(data: dict[str, Any], base: Path, workdir: Path, source: str) -> tuple[bool, dict]:
    run = _mapping(data.get("run"), "run", source)
    _known(run, _RUN_KEYS, "run.", source)
    submit = run.get("submit", True)
    if not isinstance(submit, bool):
        raise ConfigError("run.submit", submit, "true or false", source=source)
    overrides = dict(_mapping(run.get("config"), "run.config", source))
    for key, value in overrides.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(
                f"run.config.{key}", value, "a string, number or boolean", source=source
            )
    for key in _RUN_PATH_KEYS:
        if isinstance(overrides.get(key), str) and overrides[key].lower() not in ("null", "none"):
            overrides[key] = str(
                _file(overrides[key], f"run.config.{key}", base, source, must_exist=False)
            )
    overrides.setdefault("runs_dir", str(workdir / "runs"))
    known = set(to_flat(ExperimentConfig()))
    for key, folder in _WORKDIR_DEFAULTS.items():
        if key in known:  # everything the ServerApp keeps lives in the coordinator folder
            overrides.setdefault(key, str(workdir / folder))
    return submit, overrides


def _sites(value: object, base: Path, source: str) -> tuple[SiteEntry, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("sites", value, "a list of {name, auth_pub}", source=source)
    out = []
    for i, item in enumerate(value):
        item = _mapping(item, f"sites[{i}]", source)
        _known(item, _SITE_KEYS, f"sites[{i}].", source)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"sites[{i}].name", name, "the site's name", source=source)
        pub = _file(item.get("auth_pub"), f"sites[{i}].auth_pub", base, source, must_exist=True)
        signing = item.get("signing_pub")
        if signing is not None:
            signing = _file(signing, f"sites[{i}].signing_pub", base, source, must_exist=True)
        out.append(SiteEntry(name, pub, signing))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ConfigError("sites", names, "distinct site names", source=source)
    return tuple(out)


def load_server_config(path: Path) -> ServerDeployConfig:
    """Read and check server.yaml, including its run config, before any process starts."""
    path = Path(path).expanduser().resolve()
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            "server config", source, "an existing server.yaml", source=source
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError("<document>", source, f"valid YAML ({err})", source=source) from None
    if not isinstance(data, dict):
        raise ConfigError("<root>", data, f"a mapping with keys {list(SERVER_KEYS)}", source=source)
    _known(data, SERVER_KEYS, "", source)
    base = path.parent
    workdir_value = data.get("workdir", ".")
    if not isinstance(workdir_value, str) or not workdir_value.strip():
        raise ConfigError("workdir", workdir_value, "a folder path", source=source)
    workdir = (base / Path(workdir_value).expanduser()).resolve()
    tls = _mapping(data.get("tls"), "tls", source)
    _known(tls, _TLS_KEYS, "tls.", source)
    files = {
        key: _file(tls.get(key), f"tls.{key}", base, source, must_exist=True) for key in _TLS_KEYS
    }
    app = data.get("app")
    app_dir = None
    if app is not None:
        app_dir = _file(app, "app", base, source, must_exist=False)
        if not (app_dir / "pyproject.toml").is_file():
            raise ConfigError("app", app, "a Flower app folder with pyproject.toml", source=source)
    submit, overrides = _run(data, base, workdir, source)
    sites = _sites(data.get("sites"), base, source)
    if overrides.get("dataset.name") == "site_files" and sites:
        # Deployed sites read their own files; the server only needs one name per site.
        overrides.setdefault("dataset.files", ",".join(s.name for s in sites))
    config = ServerDeployConfig(
        path=path,
        workdir=workdir,
        fleet_api=_address(data.get("fleet_api", "127.0.0.1:9092"), "fleet_api", source),
        control_api=_address(data.get("control_api", "127.0.0.1:9093"), "control_api", source),
        app=app_dir,
        submit=submit,
        run_overrides=overrides,
        sites=sites,
        access=parse_access(
            data.get("access"), base=base, source=source, workdir=workdir, tls=files
        ),
        **files,
    )
    remote = data.get("control_api_remote", False)
    if not isinstance(remote, bool):
        raise ConfigError("control_api_remote", remote, "true or false", source=source)
    if not config.control_api_is_loopback and not remote:
        raise ConfigError(
            "control_api",
            config.control_api,
            "a loopback address (127.0.0.1:PORT): whoever reaches the Control API can submit "
            "runs; set control_api_remote: true to bind it elsewhere on purpose",
            source=source,
        )
    if config.fleet_api == config.control_api:
        raise ConfigError(
            "control_api", config.control_api, "an address other than fleet_api", source=source
        )
    config.experiment()  # a bad run key stops here, naming server.yaml
    return config
