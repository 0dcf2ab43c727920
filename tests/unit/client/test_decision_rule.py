"""The prevalence decision rule: argmax p(c|x) / p_c with the declared prevalence only.

A DP model for a rare outcome ranks well and decides badly: clipping every example's gradient
to C undoes most of a class weight, so the model says "majority" to everyone (balanced accuracy
0.5). Dividing by the declared prevalence moves the decision, not the model, and reads nothing
of the site's rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedsafe.client.local_round import RoundContext, evaluate_round, train_round
from fedsafe.client.site import simulated_site
from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.errors import FedsafeError
from fedsafe.common.training import eval_counts


@pytest.fixture(autouse=True)
def task_identity() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


class _Fixed(nn.Module):
    """Logits log p for p(bad | x) = 0.02 + 0.1 * x: every probability under 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bad = 0.02 + 0.1 * x[:, 0]
        return torch.log(torch.stack([1 - bad, bad], dim=1))


def test_dividing_by_the_prevalence_flags_the_rare_class_the_argmax_never_does() -> None:
    x = np.linspace(0, 1, 200, dtype=np.float32)[:, None]
    y = (x[:, 0] > 0.8).astype(np.int64)  # the riskiest fifth are the bad loans
    cpu = torch.device("cpu")
    plain = eval_counts(_Fixed(), x, y, device=cpu, loss_clip=10.0)
    adjusted = eval_counts(_Fixed(), x, y, device=cpu, loss_clip=10.0, prior=np.array([0.95, 0.05]))
    assert plain.balanced_accuracy == pytest.approx(0.5)  # "good loan" to everyone
    # p(bad)/0.05 > p(good)/0.95 from p(bad) > 0.05, i.e. x > 0.3: all 40 bad loans flagged,
    # 60 of the 160 good ones cleared: (1 + 0.375) / 2
    assert adjusted.balanced_accuracy == pytest.approx(0.6875, abs=0.01)
    assert (adjusted.loss, adjusted.auroc) == (plain.loss, plain.auroc)  # the model is the same


def _cfg(tmp_path: Path, **training: object) -> ExperimentConfig:
    return from_dict(
        ExperimentConfig,
        {
            "runs_dir": str(tmp_path),
            "training": {"rounds": 3, **training},
            "security": {"sealed_updates": False},
        },
    )


def test_a_site_that_declared_no_prevalence_refuses_rather_than_guess(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, decision_rule="prevalence")  # the hospitals declare none
    site = simulated_site(cfg, 0, "run-1")
    ctx = RoundContext(run_id="run-1", server_round=1, purpose="cardiology-research")
    from fedsafe.common.data import dataset_info
    from fedsafe.common.models import build_model

    info = dataset_info(cfg.dataset.name)
    model = build_model("mlp", n_features=info.n_features, n_classes=2, hidden=32, seed=0)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_round(cfg, site, state, ctx)
    with pytest.raises(FedsafeError, match="decision_rule=prevalence needs the class prevalence"):
        evaluate_round(cfg, site, state, ctx)


def test_the_models_own_mean_undoes_a_shift_the_declared_prevalence_cannot() -> None:
    """A clipped DP model puts p(bad|x) under the prevalence for everyone; its own mean moves
    the decision back to where the ranking separates the classes."""
    x = np.linspace(0, 1, 200, dtype=np.float32)[:, None]
    y = (x[:, 0] > 0.8).astype(np.int64)

    class _Shifted(nn.Module):  # p(bad|x) = 0.001 + 0.02 x: all under 0.05
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            bad = 0.001 + 0.02 * x[:, 0]
            return torch.log(torch.stack([1 - bad, bad], dim=1))

    cpu = torch.device("cpu")
    by_prevalence = eval_counts(
        _Shifted(), x, y, device=cpu, loss_clip=10.0, prior=np.array([0.95, 0.05])
    )
    by_own_mean = eval_counts(_Shifted(), x, y, device=cpu, loss_clip=10.0, balanced_decision=True)
    assert by_prevalence.balanced_accuracy == pytest.approx(0.5)
    assert by_own_mean.balanced_accuracy > 0.8  # flags x above the mean, all 40 bad loans


def test_class_weights_and_the_prevalence_rule_together_are_refused() -> None:
    from fedsafe.common.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        from_dict(
            ExperimentConfig,
            {"training": {"class_weighting": "balanced", "decision_rule": "prevalence"}},
        )
    assert caught.value.key == "training.decision_rule"


@pytest.mark.parametrize("rule", ["prevalence", "balanced"])
def test_neither_rule_reads_a_label(rule: str) -> None:
    """Flip every held-out label: a decision made without labels stays the same, so balanced
    accuracy becomes exactly 1 minus what it was. A rule that read the rows' label frequency
    would move its threshold with the flip and break this."""
    x = np.linspace(0, 1, 200, dtype=np.float32)[:, None]
    y = (x[:, 0] > 0.8).astype(np.int64)
    cpu = torch.device("cpu")
    prior = np.array([0.95, 0.05]) if rule == "prevalence" else None
    balanced = rule == "balanced"

    def decide(labels: np.ndarray) -> float:
        counts = eval_counts(
            _Fixed(), x, labels, device=cpu, loss_clip=10.0, prior=prior, balanced_decision=balanced
        )
        return counts.balanced_accuracy

    before, after = decide(y), decide(1 - y)
    assert after == pytest.approx(1 - before)
    assert before != pytest.approx(0.5)  # the check has something to see
