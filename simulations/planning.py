"""The privacy plan of a simulated federation, printed before it starts: whom a cap stops, when."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fedsafe.client.budget import BudgetStore
from fedsafe.common.config import ExperimentConfig
from fedsafe.common.data import load_sites
from fedsafe.common.errors import ConfigError
from fedsafe.common.layout import dataset_id_for, federation_sites, simulated_site_dir
from fedsafe.common.privacy import Charge
from fedsafe.common.privacy.client_level import client_level_account
from fedsafe.common.privacy.plan_table import FederationPlan, plan_federation

__all__ = ["plan_simulation"]


def _prior(cfg: ExperimentConfig, site: str, run_id: str) -> list[Charge]:
    store_path = simulated_site_dir(cfg, site, run_id) / "budget.sqlite"
    if not Path(store_path).exists():
        return []
    with BudgetStore.open(store_path, create=False) as store:
        return store.history(dataset_id_for(cfg, site))


def plan_simulation(cfg: ExperimentConfig, run_id: str) -> FederationPlan:
    """Each simulated site's noise, epsilon per round (on top of its prior spend) and cap round."""
    chosen = set(federation_sites(cfg))  # federation.sites may take part of the data set
    # Only the row counts matter here, and features do not change them: plan on the pixels
    # rather than computing every site's scattering coefficients in the coordinator.
    counted = dataclasses.replace(cfg.dataset, features="pixels")
    loaded = [s for s in load_sites(counted) if s.site in chosen]
    sites = {s.site: s.n_train for s in loaded}
    smallest = min(loaded, key=lambda s: s.n_rows)
    if cfg.privacy.delta >= 1.0 / smallest.n_rows:
        raise ConfigError(
            "privacy.delta",
            cfg.privacy.delta,
            f"a float below 1/n = {1.0 / smallest.n_rows:.3g} for the smallest site "
            f"({smallest.site}, {smallest.n_rows} records); every site refuses it otherwise",
        )
    plan = plan_federation(
        sites=sites,
        rounds=cfg.training.rounds,
        local_epochs=cfg.training.local_epochs,
        batch_size=cfg.training.batch_size,
        participation=cfg.strategy.fraction_train,
        target_epsilon=cfg.privacy.target_epsilon,
        noise_multiplier=cfg.privacy.noise_multiplier,
        delta=cfg.privacy.delta,
        accountant=cfg.privacy.accountant,
        caps={s: cfg.federation.cap_for(s) for s in sites},
        prior_spend={s: _prior(cfg, s, run_id) for s in sites},
    )
    notes = []
    if cfg.dataset.protocol == "flamby":
        notes.append(
            "dataset.protocol=flamby is a benchmark protocol: FLamby's stratified split depends "
            "on every patient of a hospital, so adding or removing one patient can move others "
            "between train and test. The epsilon above holds for the training rows as split, not "
            "for the hospital's whole record set; deployed sites use the per-record split"
        )
    return dataclasses.replace(plan, client_level=client_level_account(cfg), notes=tuple(notes))
