"""Flower's robust strategies by name, under the compliance wrapper: one poisoned site cannot move
the model outside what the honest sites sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import Federation, Site
from flwr.serverapp.strategy import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum

from fedsafe.common.config import STRATEGIES, StrategyConfig, from_dict
from fedsafe.common.errors import ConfigError
from fedsafe.server.strategy import RecordingStrategy, build_strategy

HONEST = (0.10, 0.12, 0.09, 0.11, 0.10, 0.13)
POISON = 30.0  # 30 on each of 8 weights: L2 84.9, inside the default max_update_norm of 100

ROBUST = {
    "fedmedian": ({}, 4),
    "fedtrimmedavg": ({"trim_fraction": 0.25}, 4),
    "krum": ({"num_malicious_sites": 1}, 5),
    "multikrum": ({"num_malicious_sites": 1, "num_selected_sites": 2}, 5),
    "bulyan": ({"num_malicious_sites": 1}, 7),
}


def _sites(n: int) -> list[Site]:
    honest = [Site(f"h{i}", 100, step=HONEST[i % len(HONEST)]) for i in range(n - 1)]
    return [*honest, Site("mallory", 10**12, step=POISON)]


@pytest.mark.parametrize("name", sorted(ROBUST))
def test_one_poisoned_site_cannot_move_the_model_past_the_honest_updates(
    federation: Callable[..., Federation], name: str
) -> None:
    extra, n = ROBUST[name]
    sites = _sites(n)
    fed = federation(*sites, name=name, min_sites=n, **extra)
    assert isinstance(fed.strategy, RecordingStrategy)  # consent, attestations, ledger around it
    model = fed.run(rounds=2)
    w = model["w"].numpy()
    steps = [s.step for s in sites[:-1]]
    # Two rounds of honest steps: the model lies within what honest sites could have reached.
    assert np.all(w >= 2 * min(steps) - 1e-6) and np.all(w <= 2 * max(steps) + 1e-6), w
    assert len(fed.ledger("attestation")) == 2 * n  # the wrapper checked and recorded every one


def test_without_a_robust_rule_the_same_attack_moves_the_model(
    federation: Callable[..., Federation],
) -> None:
    fed = federation(*_sites(5), min_sites=5)  # fedavg: the poison is bounded, not removed
    w = fed.run()["w"].numpy()
    assert np.all(w > 1.0)
    assert np.all(w <= 0.5 * POISON + 0.5 * max(HONEST) + 1e-6)  # the weight share cap holds


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("fedmedian", FedMedian),
        ("fedtrimmedavg", FedTrimmedAvg),
        ("krum", Krum),
        ("multikrum", MultiKrum),
        ("bulyan", Bulyan),
    ],
)
def test_each_robust_strategy_is_flowers_own_message_api_class(name: str, cls: type) -> None:
    extra, n = ROBUST[name]
    strategy = build_strategy(from_dict(StrategyConfig, {"name": name, "min_sites": n, **extra}))
    assert type(strategy) is cls


@pytest.mark.parametrize(
    ("config", "needed"),
    [
        ({"name": "krum", "min_sites": 4}, ">= 5"),
        ({"name": "multikrum", "min_sites": 4}, ">= 5"),
        ({"name": "bulyan", "min_sites": 5}, ">= 7"),
        ({"name": "fedtrimmedavg", "min_sites": 3, "trim_fraction": 0.25}, ">= 4"),
        ({"name": "fedmedian", "min_sites": 2}, ">= 3"),
    ],
)
def test_too_few_sites_for_the_tolerance_is_refused_up_front(
    config: dict[str, object], needed: str
) -> None:
    with pytest.raises(ConfigError, match="strategy.min_sites") as err:
        build_strategy(from_dict(StrategyConfig, config))
    assert needed in str(err.value)


def test_every_strategy_name_has_a_conf_file_that_builds() -> None:
    folder = Path(__file__).parents[3] / "conf" / "strategy"
    names = set()
    for path in sorted(folder.glob("*.yaml")):
        cfg = from_dict(StrategyConfig, yaml.safe_load(path.read_text()), source=str(path))
        build_strategy(cfg)
        names.add(cfg.name)
    assert names == set(STRATEGIES)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_weight_share", 0.0),
        ("max_weight_share", 1.5),
        ("max_update_norm", float("inf")),
        ("max_update_norm", 0.0),
        ("num_malicious_sites", -1),
        ("trim_fraction", 0.5),
        ("num_selected_sites", 0),
        ("name", "krumm"),
    ],
)
def test_bad_strategy_bounds_are_refused_by_name(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"strategy.{key}"):
        from_dict(StrategyConfig, {key: value}, prefix="strategy.")
