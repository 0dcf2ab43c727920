"""One site's train/held-out arrays, built from its own rows only, via the data set registry."""

from __future__ import annotations

from functools import cache

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data.base import SiteData
from fedsafe.common.data.registry import dataset_info, get_dataset
from fedsafe.common.errors import DataError

__all__ = ["SiteData", "site_names", "load_site", "load_sites"]


def site_names(cfg: DatasetConfig) -> tuple[str, ...]:
    """Site names in partition order: real sites for `natural`, else site-01..N."""
    entry = get_dataset(cfg.name)
    if entry.sites is not None:
        return entry.sites(cfg)
    if cfg.partition == "natural":
        natural = dataset_info(cfg.name, cfg).natural_sites
        if not natural:
            raise DataError(
                f"dataset {cfg.name!r} has no natural sites; "
                "set dataset.partition to 'iid' or 'dirichlet'"
            )
        return natural
    return tuple(f"site-{i + 1:02d}" for i in range(cfg.num_sites))


@cache
def load_site(cfg: DatasetConfig, index: int) -> SiteData:
    """Load site `index`: its own rows, split and encoded record by record."""
    names = site_names(cfg)
    if not 0 <= index < len(names):
        raise DataError(
            f"site index {index} out of range: dataset {cfg.name!r} has {len(names)} sites"
        )
    return get_dataset(cfg.name).load(cfg, index, names[index])


def load_sites(cfg: DatasetConfig) -> list[SiteData]:
    """Every site of a simulated federation, in partition order."""
    return [load_site(cfg, i) for i in range(len(site_names(cfg)))]
