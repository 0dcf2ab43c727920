"""federation.sites chooses the hospitals that take part; unknown sites and caps are errors."""

from __future__ import annotations

import pytest

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.errors import ConfigError
from fedsafe.common.layout import federation_sites, site_index


def _cfg(**federation: object) -> ExperimentConfig:
    return from_dict(ExperimentConfig, {"federation": federation})


def test_federation_sites_are_honoured_in_data_set_order() -> None:
    cfg = _cfg(sites=["hungary", "cleveland"])

    assert federation_sites(cfg) == ("cleveland", "hungary")
    assert site_index(cfg, 1) == ("hungary", 1)
    assert site_index(_cfg(sites=["switzerland"]), 0) == ("switzerland", 3)
    assert len(federation_sites(_cfg())) == 4


def test_an_unknown_site_names_the_key_and_the_known_sites() -> None:
    with pytest.raises(ConfigError, match=r"'federation.sites': got 'atlantis'.*'cleveland'"):
        federation_sites(_cfg(sites=["cleveland", "atlantis"]))


def test_a_cap_for_a_misspelled_site_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"'federation.caps.clevelnd'.*'cleveland'"):
        federation_sites(_cfg(caps={"clevelnd": 3.0}))
