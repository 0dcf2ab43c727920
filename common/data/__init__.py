"""Site data: built-in real data sets, schema-checked site files, partitioners, preprocessing."""

# Importing a family module registers its data sets (one module per family).
from fedsafe.common.data import banks, breast_cancer, heart, images, site_file  # noqa: F401
from fedsafe.common.data.base import DatasetInfo, SiteData
from fedsafe.common.data.registry import DATASETS, dataset_info, register_dataset
from fedsafe.common.data.site_file import LoadedSiteFile, load_site_file, site_data_from_file
from fedsafe.common.data.sites import load_site, load_sites, site_names

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "LoadedSiteFile",
    "SiteData",
    "dataset_info",
    "load_site",
    "load_site_file",
    "load_sites",
    "register_dataset",
    "site_data_from_file",
    "site_names",
]
