"""Data set registry: each family module registers its loaders by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data.base import DatasetInfo, SiteData
from fedsafe.common.errors import DataError

__all__ = ["DatasetEntry", "DATASETS", "register_dataset", "get_dataset", "dataset_info"]

InfoFn = Callable[[DatasetConfig | None], DatasetInfo]
LoadFn = Callable[[DatasetConfig, int, str], SiteData]
SitesFn = Callable[[DatasetConfig], tuple[str, ...]]


@dataclass(frozen=True)
class DatasetEntry:
    """How to describe a data set (no rows read) and how to build one site from it.

    `load(cfg, index, site)` returns site `index`, named `site`; `sites(cfg)`, when given,
    overrides the default site naming (real sites for `natural`, site-01..N otherwise).
    """

    name: str
    info: InfoFn
    load: LoadFn
    sites: SitesFn | None = None


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str, *, info: InfoFn, load: LoadFn, sites: SitesFn | None = None
) -> None:
    """Add a data set family member; a second registration under one name is a bug."""
    if name in DATASETS:
        raise ValueError(f"dataset {name!r} is already registered")
    DATASETS[name] = DatasetEntry(name, info, load, sites)


def get_dataset(name: str) -> DatasetEntry:
    """The registry entry for `name`; unknown names raise and list the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known datasets: {sorted(DATASETS)}") from None


def dataset_info(name: str, cfg: DatasetConfig | None = None) -> DatasetInfo:
    """Shape of a registered data set, read without touching any site's rows.

    `cfg` is needed only where the shape depends on configuration (`site_files`: the schema).
    """
    return get_dataset(name).info(cfg)
