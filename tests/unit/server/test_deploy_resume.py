"""`fedsafe server start --resume` is the same run: changed settings, finished runs, plants."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from fedsafe.common.crypto.pki import init_server_signing_key
from fedsafe.server.checkpoint import Checkpoint, save_checkpoint
from fedsafe.server.deploy.config import ServerDeployConfig, load_server_config
from fedsafe.server.deploy.process import DeployError
from fedsafe.server.deploy.resume import refuse_restart, resume_target, with_resume
from fedsafe.server.resume_config import bound_config


def _server_yaml(root: Path, **run_config: object) -> ServerDeployConfig:
    for name in ("ca.pem", "server.pem", "server.key"):
        (root / name).write_text("placeholder")
    config = {
        "workdir": "coordinator",
        "tls": {"ca_cert": "ca.pem", "cert": "server.pem", "key": "server.key"},
        "fleet_api": "127.0.0.1:1",
        "control_api": "127.0.0.1:2",
        "run": {"config": {"experiment.name": "trial", "training.rounds": 3, **run_config}},
    }
    path = root / "server.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_server_config(path)


def _checkpoint(cfg: ServerDeployConfig, run_id: str, *, finished: bool = False) -> None:
    """What the ServerApp writes after round 2, signed with the coordinator's own key."""
    run_dir = cfg.runs_dir / run_id
    run_dir.mkdir(parents=True)
    if not (cfg.server_keys_dir / "server_signing.key").exists():
        init_server_signing_key(cfg.server_keys_dir)
    checkpoint = Checkpoint(
        2, {}, {}, (1, "0" * 64), {}, {}, bound_config(cfg.experiment()), finished=finished
    )
    save_checkpoint(
        run_dir,
        checkpoint,
        private_pem=(cfg.server_keys_dir / "server_signing.key").read_bytes(),
        public_pem=(cfg.server_keys_dir / "server_signing.pub").read_bytes(),
    )


def test_an_unchanged_config_resumes(tmp_path: Path) -> None:
    cfg = _server_yaml(tmp_path)
    _checkpoint(cfg, "trial-1")

    resumed = with_resume(cfg, resume_target(cfg, "trial-1"))

    assert resumed.experiment().resume and resumed.experiment().run_id == "trial-1"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"privacy.target_epsilon": 20.0}, "privacy.target_epsilon: 3.0 -> 20.0"),
        ({"training.rounds": 5}, "training.rounds: 3 -> 5"),
        ({"training.local_epochs": 2}, "training.local_epochs: 1 -> 2"),
    ],
)
def test_a_changed_setting_is_refused_before_anything_starts(
    tmp_path: Path, change: dict[str, object], key: str
) -> None:
    _checkpoint(_server_yaml(tmp_path), "trial-1")
    changed = _server_yaml(tmp_path, **change)

    with pytest.raises(DeployError, match="a resume is the same run") as info:
        with_resume(changed, resume_target(changed, "trial-1"))

    assert key in str(info.value)


def test_a_finished_run_with_a_changed_cap_is_refused(tmp_path: Path) -> None:
    # The summary.json was deleted, as a careless operator might; the signed checkpoint says
    # the run finished.
    _checkpoint(_server_yaml(tmp_path), "trial-1", finished=True)
    changed = _server_yaml(tmp_path, **{"federation.max_epsilon": 29.0})

    with pytest.raises(DeployError, match="it finished"):
        resume_target(changed, "trial-1")


def test_a_planted_checkpoint_is_refused(tmp_path: Path) -> None:
    cfg = _server_yaml(tmp_path)
    _checkpoint(cfg, "trial-1")
    planted = cfg.runs_dir / "trial-1" / "checkpoint.safetensors"
    planted.write_bytes(b"\x80\x04\x95 a pickle, not a checkpoint")
    named = dataclasses.replace(cfg, run_overrides={**cfg.run_overrides, "run_id": "trial-1"})

    for call in (lambda: resume_target(cfg, "trial-1"), lambda: refuse_restart(named)):
        with pytest.raises(DeployError, match="cannot be read"):
            call()


@pytest.mark.parametrize("run_id", ["../outside", "a/b", ".."])
def test_a_run_id_that_leaves_runs_dir_is_refused(tmp_path: Path, run_id: str) -> None:
    cfg = _server_yaml(tmp_path)
    _checkpoint(cfg, "../outside")  # a genuine checkpoint, outside runs_dir

    with pytest.raises(DeployError, match="config key '--run-id'.*no path separators"):
        resume_target(cfg, run_id)
