"""`fedsafe audit privacy`: the canary audit catches a training path that leaks more than its
accountant says, and finds nothing to contradict in the real one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsafe.common.errors import ConfigError
from fedsafe.common.privacy.randomness import Randomness
from fedsafe.simulations.cli import main
from fedsafe.simulations.engine import write_config
from fedsafe.simulations.privacy_audit import membership_baseline, run_privacy_audit
from fedsafe.simulations.privacy_audit_cli import audit_config

HOSPITALS_EPS1 = ["federation=hospitals", "privacy=eps1", "training.rounds=4"]


def _no_noise(
    self: Randomness, shape: torch.Size, *, std: float, like: torch.Tensor
) -> torch.Tensor:
    """The bug the accountant cannot see: the noise source returns zeros, so clipped gradients
    are released bare (on either mechanism, fused or Opacus: both draw from here)."""
    return torch.zeros(shape, dtype=like.dtype, device=like.device)


def test_noise_switched_off_is_caught_by_a_bound_above_the_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = audit_config([*HOSPITALS_EPS1, f"runs_dir={tmp_path / 'runs'}"])
    run_dir = tmp_path / "runs" / "some-run"
    write_config(cfg, run_dir)  # audited from the run folder, as an auditor would
    monkeypatch.setattr(Randomness, "gaussian", _no_noise)
    code = main(["audit", "privacy", str(run_dir), "--canaries", "256",
                 "--out", str(tmp_path / "audits"), "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["claimed_epsilon"] == pytest.approx(1.0, abs=0.01)
    assert out["epsilon_lower_bound"] > 2 * out["claimed_epsilon"], out
    assert code == 1
    saved = json.loads((tmp_path / "audits" / out["run_id"] / "audit.json").read_text())
    assert saved["epsilon_lower_bound"] == out["epsilon_lower_bound"]
    # the audit never spent the real site's budget: its store is in the audit's folder
    assert not (tmp_path / "runs" / "sites").exists()
    assert (tmp_path / "audits" / out["run_id"] / "sites" / "cleveland" / "budget.sqlite").is_file()


def test_the_real_training_path_is_not_contradicted(tmp_path: Path) -> None:
    result = run_privacy_audit(audit_config(HOSPITALS_EPS1), tmp_path, canaries=256)
    assert result["claimed_epsilon"] == pytest.approx(1.0, abs=0.01)
    assert result["epsilon_lower_bound"] <= result["claimed_epsilon"], result
    assert 0.0 <= result["membership_inference"]["auroc"] <= 1.0
    assert result["canaries"] == 256 and 0 < result["canaries_included"] < 256


def test_run_config_must_be_a_config_or_overrides(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config.json"):
        audit_config([str(tmp_path)])
    bad = tmp_path / "config.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="readable JSON"):
        audit_config([str(tmp_path)])
    bad.write_text(json.dumps({"training": {"rounds": -3}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="training"):
        audit_config([str(bad)])
    with pytest.raises(ConfigError, match="key=value"):
        audit_config(["federation=hospitals", "stray"])


def test_membership_baseline_known_answers() -> None:
    low, high = np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6])
    assert membership_baseline(low, high) == {"auroc": 1.0, "advantage": 1.0}
    same = membership_baseline(np.array([0.4, 0.4]), np.array([0.4, 0.4]))
    assert same["auroc"] == 0.5 and same["advantage"] == 0.0
