"""Who this site is: its data, its own budget store, its policy and its signing key."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Context

from fedsafe.client.budget import StoreAnchor
from fedsafe.client.policy import SitePolicy
from fedsafe.common import keys
from fedsafe.common.config import ExperimentConfig
from fedsafe.common.crypto.pki import (
    KeyExistsError,
    init_site_keys,
    load_signing_private_key,
    load_signing_public_key,
)
from fedsafe.common.data import SiteData, load_site
from fedsafe.common.layout import coordinator_dir, dataset_id_for, simulated_site_dir, site_index
from fedsafe.common.release_policy import ReleasePolicy

__all__ = ["SiteRuntime", "deployed_site", "simulated_site", "ensure_site_keys"]


@dataclass(frozen=True)
class SiteRuntime:
    """Everything a site needs to take part in a round, all of it local to the site.

    `require_dp` is True at a deployed site: it never trains without DP-SGD and refuses the
    test-only seeded noise. A simulated site may run a non-private baseline (`privacy=off`),
    which its store records (epsilon infinite from then on). `server_sealing_key` is the
    ServerApp's X25519 public key as the site pinned it (site kit or simulation layout), never
    one sent by the relay. `anchor` signs the budget store's head with the site's own key;
    `release` is what may leave besides DP updates.
    """

    name: str
    dataset_id: str
    data: SiteData
    budget_store: Path
    policy: SitePolicy
    signing_key: bytes
    signing_public: bytes
    require_dp: bool
    anchor: StoreAnchor
    release: ReleasePolicy
    server_sealing_key: Path | None = None

    @property
    def fingerprint(self) -> str:
        """The identity of this site's rows: its budget is kept for these records."""
        return self.data.fingerprint

    @property
    def records(self) -> np.ndarray:
        """This site's records as training sees them: no other data set may account them anew."""
        return self.data.overlap_hashes


def ensure_site_keys(directory: Path, site: str) -> tuple[bytes, bytes]:
    """The site's Ed25519 signing key pair, created once (0600) and reused."""
    key = directory / "signing.key"
    if not key.exists():
        with contextlib.suppress(KeyExistsError):  # another process of the site just made it
            init_site_keys(directory, site)
    return load_signing_private_key(key), load_signing_public_key(directory / "signing.pub")


def simulated_site(cfg: ExperimentConfig, partition: int, run_id: str) -> SiteRuntime:
    """A simulated site: the partition's data, a store and keys in its own folder."""
    name, index = site_index(cfg, partition)  # federation.sites may choose some of the sites
    folder = simulated_site_dir(cfg, name, run_id)
    private, public = ensure_site_keys(folder / "keys", name)
    policy = SitePolicy(
        max_epsilon=cfg.federation.cap_for(name),
        delta=cfg.privacy.delta,
        accountant=cfg.privacy.accountant,
        min_noise_multiplier=cfg.federation.min_noise_multiplier,
        class_prevalence=cfg.federation.class_prevalence,
    )
    return SiteRuntime(
        name=name,
        dataset_id=dataset_id_for(cfg, name),
        data=load_site(cfg.dataset, index),
        budget_store=folder / "budget.sqlite",
        policy=policy,
        signing_key=private,
        signing_public=public,
        require_dp=False,
        anchor=StoreAnchor.in_keys_dir(folder / "keys", private),
        release=cfg.federation.release,
        server_sealing_key=coordinator_dir(cfg) / "keys" / "sealing.pub",
    )


_DATA: dict[tuple[object, ...], SiteData] = {}  # the site worker's one loaded data set


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _site_data(site: Any, cfg: ExperimentConfig) -> SiteData:
    """The site's data, read once per long-lived process; a changed file is read again."""
    key = (site.name, str(site.data), _stat(site.data), str(site.schema), _stat(site.schema),
           cfg.dataset.test_fraction, cfg.dataset.seed)  # fmt: skip
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = site.load_data(cfg)
    return _DATA[key]


def deployed_site(site_yaml: Path, cfg: ExperimentConfig) -> SiteRuntime:
    """A real site, from its own site.yaml (read each time): its file, store, policy and key."""
    from fedsafe.client.site_config import load_site_config

    site = load_site_config(site_yaml)
    private = load_signing_private_key(site.signing_key)
    return SiteRuntime(
        name=site.name,
        dataset_id=site.dataset_id,
        data=_site_data(site, cfg),
        budget_store=site.budget_store,
        policy=site.policy,
        signing_key=private,
        signing_public=load_signing_public_key(site.signing_key.with_suffix(".pub")),
        require_dp=True,
        anchor=StoreAnchor.in_keys_dir(site.keys_dir, private),
        release=site.release,
        server_sealing_key=site.server_sealing_key,
    )


REFUSAL_CODE = 4100  # a site refused the round on purpose (budget, policy, bad input)
SITE_CONFIG = "site-config"  # node config key of a deployed site: the path of its site.yaml


def site_runtime(cfg: ExperimentConfig, context: Context, run_id: str) -> SiteRuntime:
    """A deployed site reads its site.yaml; a simulated one is built from its partition."""
    torch.set_num_threads(1)  # one site per core in simulation; a deployed site may raise it
    if SITE_CONFIG in context.node_config:
        return deployed_site(Path(str(context.node_config[SITE_CONFIG])), cfg)
    return simulated_site(cfg, int(context.node_config[keys.PARTITION_ID]), run_id)
