"""Where a simulation keeps each simulated site's own files (its budget store and keys)."""

from __future__ import annotations

from pathlib import Path

from fedsafe.common.config import ExperimentConfig
from fedsafe.common.data import site_names
from fedsafe.common.errors import ConfigError
from fedsafe.common.names import check_name

__all__ = [
    "simulated_site_dir",
    "coordinator_dir",
    "coordinator_keys_dir",
    "dataset_id_for",
    "federation_sites",
    "site_index",
]


def federation_sites(cfg: ExperimentConfig) -> tuple[str, ...]:
    """The sites that take part, in the data set's order: `federation.sites`, or all of them.

    An unknown name in `federation.sites` or `federation.caps` is an error naming the key and
    the known sites (a cap for a misspelled site would otherwise be silently dropped).
    """
    known = site_names(cfg.dataset)
    for site in cfg.federation.sites:
        check_name("federation.sites", site)
        if site not in known:
            allowed = f"one of the data set's sites {list(known)}"
            raise ConfigError("federation.sites", site, allowed)
    for site in cfg.federation.caps:
        if site not in known:
            raise ConfigError(
                f"federation.caps.{site}", cfg.federation.caps[site],
                f"caps only for the data set's sites {list(known)}",
            )  # fmt: skip
    chosen = set(cfg.federation.sites)
    return tuple(s for s in known if s in chosen) if chosen else known


def site_index(cfg: ExperimentConfig, partition: int) -> tuple[str, int]:
    """Simulated node `partition` -> (site name, its index among the data set's sites)."""
    name = federation_sites(cfg)[partition]
    return name, site_names(cfg.dataset).index(name)


def simulated_site_dir(cfg: ExperimentConfig, site: str, run_id: str) -> Path:
    """`<runs_dir>/sites/<site>`: kept across runs, so budgets accumulate; inside the run
    folder instead when `federation.fresh_budget` asks for new stores."""
    base = Path(cfg.runs_dir)
    if cfg.federation.fresh_budget:
        base = base / run_id
    return base / "sites" / site


def coordinator_dir(cfg: ExperimentConfig) -> Path:
    """`<runs_dir>/coordinator`: the simulated coordinator's long-lived keys."""
    return Path(cfg.runs_dir) / "coordinator"


def coordinator_keys_dir(cfg: ExperimentConfig) -> Path:
    """The coordinator's signing and sealing keys: `compliance.server_keys_dir` or the default."""
    configured = cfg.compliance.server_keys_dir
    return Path(configured) if configured else coordinator_dir(cfg) / "keys"


def dataset_id_for(cfg: ExperimentConfig, site: str) -> str:
    """A simulated site's data set label. Only a name: the budget is pinned to the rows'
    fingerprint, so another partition of pooled data under this label is refused until
    acknowledged, never a fresh budget."""
    return f"{cfg.dataset.name}/{site}"
