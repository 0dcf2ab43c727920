"""Site data: built-in real data sets, partitioners and per-site preprocessing."""

from common.data.builtin import DATASETS, DatasetInfo, dataset_info
from common.data.sites import SiteData, load_site, load_sites, site_names

__all__ = ["DATASETS", "DatasetInfo", "SiteData", "dataset_info", "load_site", "load_sites", "site_names"]
