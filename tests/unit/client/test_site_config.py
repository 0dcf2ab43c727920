"""site.yaml loading, the site kit template, and `fedsafe site start`'s checks and command."""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import stat
from pathlib import Path

import pytest
import yaml

from fedsafe.client.deploy import NODE_CONFIG_KEY, check_site, run_start, supernode_command
from fedsafe.client.policy import SitePolicy
from fedsafe.client.site_config import REQUIRED_KEYS, SiteConfig, load_site_config
from fedsafe.client.site_kit import init_site_kit
from fedsafe.common.config import ExperimentConfig
from fedsafe.common.crypto.pki import KeyFileError, init_ca, init_server_sealing_key
from fedsafe.common.errors import ConfigError, DataError

SCHEMA = """\
target: {column: default, positive: [yes], negative: [no]}
missing: error
columns:
  age: numeric
  income: {type: numeric, missing: impute}
  home: {type: categorical, levels: [rent, own, mortgage]}
"""
ROWS = [
    "34,52000,rent,no",
    "51,,own,yes",
    "29,31000,mortgage,no",
    "45,61000,rent,yes",
    "38,47000,own,no",
    "62,39000,mortgage,yes",
    "27,28000,rent,no",
    "44,58000,own,yes",
    "33,41000,rent,no",
    "58,72000,mortgage,yes",
]


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_ca(tmp_path_factory.mktemp("ca"), "test CA").cert


@pytest.fixture(scope="module")
def sealing_pub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_server_sealing_key(tmp_path_factory.mktemp("server-keys"))[1]


@pytest.fixture
def kit(tmp_path: Path, ca_pem: Path, sealing_pub: Path) -> Path:
    """A site kit from `fedsafe site init`, with a small valid data file and schema added."""
    made = init_site_kit(
        "bank-north",
        tmp_path / "kit",
        superlink="127.0.0.1:9092",
        ca_cert=ca_pem,
        server_sealing_pub=sealing_pub,
    )
    (made.directory / "schema.yaml").write_text(SCHEMA)
    (made.directory / "data.csv").write_text("age,income,home,default\n" + "\n".join(ROWS) + "\n")
    return made.site_yaml


def _edit(site_yaml: Path, **changes: object) -> Path:
    data = yaml.safe_load(site_yaml.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    site_yaml.write_text(yaml.safe_dump(data))
    return site_yaml


# --- the kit ------------------------------------------------------------------------------


def test_site_init_writes_keys_commented_yaml_and_readme(kit: Path) -> None:
    folder = kit.parent

    names = {p.name for p in folder.iterdir()}
    text = kit.read_text()
    readme = (folder / "README.md").read_text()

    assert {"auth.key", "auth.pub", "signing.key", "signing.pub", "README.md"} <= names
    assert {"ca.pem", "server_sealing.pub"} <= names
    assert stat.S_IMODE(os.stat(folder / "auth.key").st_mode) == 0o600
    assert (folder / "auth.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
    assert text.count("#") > 20  # every key explained
    assert set(REQUIRED_KEYS) <= set(yaml.safe_load(text))
    for phrase in ("fedsafe site budget --store", "fedsafe audit verify", "No data row"):
        assert phrase in readme


def test_site_init_template_loads_once_data_is_there(kit: Path) -> None:
    cfg = load_site_config(kit)

    assert cfg.name == "bank-north" and cfg.superlink == "127.0.0.1:9092"
    assert cfg.dataset_id == "bank-north-v1"
    assert cfg.policy == SitePolicy(max_epsilon=8.0)
    assert cfg.runtime_api is None
    assert cfg.server_sealing_key == (kit.parent / "server_sealing.pub").resolve()


def test_site_init_refuses_to_overwrite(kit: Path) -> None:
    with pytest.raises(KeyFileError, match="site.yaml"):
        init_site_kit("bank-north", kit.parent)


# --- site.yaml ----------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_yaml_folder(
    kit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the process's folder must not matter

    cfg = load_site_config(Path(os.path.relpath(kit, elsewhere)))

    folder = kit.parent.resolve()
    assert cfg.path == kit.resolve()
    assert (cfg.auth_key, cfg.signing_key, cfg.data, cfg.schema) == (
        folder / "auth.key",
        folder / "signing.key",
        folder / "data.csv",
        folder / "schema.yaml",
    )
    assert cfg.budget_store == folder / "budget.sqlite"


def test_site_config_is_frozen(kit: Path) -> None:
    cfg = load_site_config(kit)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"  # type: ignore[misc]


def test_load_data_reads_the_site_file_with_the_run_split(kit: Path) -> None:
    cfg = load_site_config(kit)

    data = cfg.load_data(ExperimentConfig())

    assert data.site == "bank-north"
    assert len(data.y_train) + len(data.y_test) == len(ROWS)
    assert data.x_train.shape[1] == data.x_test.shape[1] > 0


@pytest.mark.parametrize(
    ("changes", "key", "allowed"),
    [
        ({"sitee": "x"}, "sitee", "did you mean 'site'"),
        ({"policy": None}, "policy", "required key"),
        ({"superlink": "no-port"}, "superlink", "host:port"),
        ({"superlink": "host:70000"}, "superlink", "host:port"),
        ({"site": "bad name!"}, "site", "site name"),
        ({"data": "missing.csv"}, "data", "an existing file"),
        ({"ca_cert": "none.pem"}, "ca_cert", "an existing file"),
        ({"budget_store": "no/such/dir/b.sqlite"}, "budget_store", "existing folder"),
        ({"dataset_id": " "}, "dataset_id", "non-empty"),
        ({"runtime_api": "0.0.0.0:9094"}, "runtime_api", "loopback"),
        ({"server_sealing_pub": "auth.pub"}, "server_sealing_pub", "X25519 public key"),
        ({"server_sealing_pub": "gone.pub"}, "server_sealing_pub", "an existing file"),
        ({"policy": {"max_epsilon": 3, "detla": 1e-5}}, "policy.detla", "one of"),
        ({"policy": {"max_epsilon": -1}}, "policy.max_epsilon", "finite float > 0"),
    ],
)
def test_each_bad_key_names_key_value_and_file(
    kit: Path, changes: dict[str, object], key: str, allowed: str
) -> None:
    _edit(kit, **changes)

    with pytest.raises(ConfigError) as info:
        load_site_config(kit)

    assert info.value.key == key
    assert allowed in info.value.allowed
    assert info.value.source == str(kit.resolve())


def test_missing_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="existing site.yaml"):
        load_site_config(tmp_path / "nope.yaml")
    bad = tmp_path / "site.yaml"
    bad.write_text("site: [unclosed")
    with pytest.raises(ConfigError, match="valid YAML"):
        load_site_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_site_config(bad)


# --- fedsafe site start -------------------------------------------------------------------


def test_check_site_rejects_a_bad_row_before_connecting(kit: Path) -> None:
    data = kit.parent / "data.csv"
    data.write_text(data.read_text().replace("rent,no", "castle,no", 1))

    with pytest.raises(DataError, match=r"row 1, column 'home'.*castle"):
        check_site(kit)


def test_check_site_counts_rows_and_creates_the_budget_store(kit: Path) -> None:
    check = check_site(kit)

    assert check.train_rows + check.test_rows == len(ROWS)
    assert check.config.budget_store.is_file()


def test_supernode_command_uses_tls_auth_and_the_site_yaml_path(kit: Path) -> None:
    cfg = load_site_config(kit)

    command = supernode_command(cfg, runtime_port=9200, max_retries=2, max_wait_time=5)

    joined = " ".join(command)
    assert command[0].endswith("flower-supernode")
    assert f"--root-certificates {cfg.ca_cert}" in joined
    assert f"--auth-supernode-private-key {cfg.auth_key}" in joined
    assert f"--superlink {cfg.superlink}" in joined
    assert command[command.index("--node-config") + 1] == f"{NODE_CONFIG_KEY}='{cfg.path}'"
    assert "--insecure" not in command
    assert (command[command.index("--host") + 1], command[command.index("--port") + 1]) == (
        "127.0.0.1",
        "9200",
    )
    assert command[-4:] == ["--max-retries", "2", "--max-wait-time", "5"]


def test_supernode_runtime_port_from_config_or_free(kit: Path) -> None:
    fixed = dataclasses.replace(load_site_config(kit), runtime_api="127.0.0.1:9311")
    free = load_site_config(kit)

    assert supernode_command(fixed)[-1] == "9311"
    assert int(supernode_command(free)[-1]) > 0


def test_node_config_refuses_a_quote_in_the_path(kit: Path) -> None:
    cfg = dataclasses.replace(load_site_config(kit), path=Path("/tmp/it's/site.yaml"))
    with pytest.raises(ConfigError, match="single quotes"):
        supernode_command(cfg)


def test_site_start_dry_run_checks_then_prints_the_command(kit: Path) -> None:
    out = io.StringIO()
    args = argparse.Namespace(
        config=kit, dry_run=True, isolation="subprocess", max_retries=None, max_wait_time=None
    )

    assert run_start(args, out=out) == 0

    text = out.getvalue()
    assert "valid against" in text and "flower-supernode" in text
    assert isinstance(load_site_config(kit), SiteConfig)
