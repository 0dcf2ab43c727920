"""monitoring: off by default, loopback only, http(s) webhooks only; named in every refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from fedsafe.common.config import ExperimentConfig, MonitoringConfig, from_dict, from_flat
from fedsafe.common.errors import ConfigError
from fedsafe.server.monitor import recorder_for
from fedsafe.server.recorder import RunRecorder
from fedsafe.simulations.run import config_from_hydra


def test_monitoring_is_off_by_default_and_then_no_monitor_starts(tmp_path: Path) -> None:
    cfg = from_dict(ExperimentConfig, {"runs_dir": str(tmp_path)})
    assert cfg.monitoring.enabled is False
    recorder, monitor = recorder_for(cfg, tmp_path / "run", compliance=None)  # type: ignore[arg-type]
    assert monitor is None and type(recorder) is RunRecorder
    recorder.close()
    assert not (tmp_path / "run" / "monitor.json").exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "localhost", "::", "example.org", ""])
def test_a_host_beyond_loopback_is_refused_naming_the_field(host: str) -> None:
    with pytest.raises(ConfigError, match=r"config key 'monitoring.host'.*loopback IP address"):
        from_dict(ExperimentConfig, {"monitoring": {"enabled": True, "host": host}})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1"])
def test_loopback_addresses_are_accepted(host: str) -> None:
    assert MonitoringConfig(host=host).host == host


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("webhook_url", "file:///etc/passwd"),
        ("webhook_url", "ftp://example.org/x"),
        ("webhook_url", "http://"),
        ("webhook_timeout_s", 0.0),
        ("webhook_timeout_s", float("inf")),
        ("webhook_timeout_s", 31.0),
        ("port", 70000),
        ("port", -1),
        ("epsilon_alert_fraction", 0.0),
        ("epsilon_alert_fraction", 1.5),
    ],
)
def test_bad_values_name_their_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"config key 'monitoring.{key}'"):
        from_dict(ExperimentConfig, {"monitoring": {key: value}})


def test_flower_run_config_keys_reach_the_section() -> None:
    """A deployed run gets its config as flat strings (`flwr run --run-config`)."""
    cfg = from_flat(
        {
            "monitoring.enabled": "true",
            "monitoring.port": 9464,
            "monitoring.webhook_url": "https://alerts.example.org/hook",
        }
    )
    assert cfg.monitoring.enabled and cfg.monitoring.port == 9464
    assert cfg.monitoring.webhook_url == "https://alerts.example.org/hook"


def test_hydra_overrides_reach_the_section_and_a_bad_host_names_the_override() -> None:
    with initialize_config_module(config_module="fedsafe.conf", version_base="1.3"):
        composed = compose(
            config_name="config",
            overrides=["monitoring.enabled=true", "monitoring.port=9464"],
            return_hydra_config=True,
        )
        cfg = config_from_hydra(composed)
        assert cfg.monitoring.enabled and cfg.monitoring.port == 9464
        assert cfg.monitoring.host == "127.0.0.1"
        bad = compose(
            config_name="config", overrides=["monitoring.host=0.0.0.0"], return_hydra_config=True
        )
        with pytest.raises(ConfigError, match=r"'monitoring.host' \(from command-line override"):
            config_from_hydra(bad)
