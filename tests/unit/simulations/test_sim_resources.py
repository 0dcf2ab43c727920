"""What a simulation asks Ray for. Ray hides every GPU from an actor given none, so a GPU
machine's sites see CUDA under `training.device=auto` only when they are given a share; a
setting the machine cannot meet is refused before Ray starts, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.errors import ConfigError
from fedsafe.common.training import resolve_device
from fedsafe.simulations.resources import backend_config, cuda_devices


def _cfg(device: str = "auto", gpus: float | None = None, parallel: int = 2) -> ExperimentConfig:
    federation: dict[str, object] = {"max_parallel_sites": parallel}
    if gpus is not None:
        federation["gpus_per_site"] = gpus
    return from_dict(ExperimentConfig, {"training": {"device": device}, "federation": federation})


def test_auto_on_a_gpu_machine_gives_each_parallel_site_a_share() -> None:
    backend = backend_config(_cfg(), 4, cuda=1)
    assert backend["client_resources"] == {"num_cpus": 1.0, "num_gpus": 0.5}
    assert backend["init_args"]["num_gpus"] == 1
    assert backend["init_args"]["num_cpus"] == 2.0


def test_auto_share_is_at_most_one_gpu_and_never_below_rays_grain() -> None:
    assert backend_config(_cfg(), 4, cuda=8)["client_resources"]["num_gpus"] == 1.0
    many = backend_config(_cfg(parallel=30_000), 30_000, cuda=1)
    assert many["client_resources"]["num_gpus"] == pytest.approx(1e-4)
    three = backend_config(_cfg(parallel=3), 3, cuda=1)["client_resources"]["num_gpus"]
    assert three == pytest.approx(0.3333) and three * 3 <= 1  # all three fit on the one GPU


def test_without_cuda_or_on_cpu_no_site_holds_a_gpu() -> None:
    for cfg, cuda in ((_cfg(), 0), (_cfg("cpu"), 2)):
        backend = backend_config(cfg, 4, cuda=cuda)
        assert backend["client_resources"]["num_gpus"] == 0.0
        assert backend["init_args"]["num_gpus"] == 0


def test_an_explicit_share_is_kept() -> None:
    backend = backend_config(_cfg("cuda", gpus=0.25), 4, cuda=1)
    assert backend["client_resources"]["num_gpus"] == 0.25


@pytest.mark.parametrize(
    ("device", "gpus", "cuda", "key"),
    [
        ("cuda", None, 0, "training.device"),  # no CUDA here
        ("cpu", 0.5, 1, "federation.gpus_per_site"),  # GPUs held and never used
        ("cuda", 0.0, 1, "federation.gpus_per_site"),  # Ray would hide the GPU
        ("auto", 2.0, 1, "federation.gpus_per_site"),  # more than the machine has
        ("auto", 1.5, 2, "federation.gpus_per_site"),  # Ray takes no fraction above 1
    ],
)
def test_a_setting_the_machine_cannot_meet_is_refused_naming_it(
    device: str, gpus: float | None, cuda: int, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        backend_config(_cfg(device, gpus), 4, cuda=cuda)
    assert caught.value.key == key


def test_a_negative_or_infinite_share_is_a_config_error() -> None:
    for bad in (-0.5, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="federation.gpus_per_site"):
            _cfg(gpus=bad)


@pytest.mark.skipif(cuda_devices() > 0, reason="checks a machine without CUDA")
def test_cuda_on_a_machine_without_it_fails_before_ray_or_any_file(tmp_path: Path) -> None:
    from fedsafe.simulations.engine import simulate

    cfg = from_dict(
        ExperimentConfig, {"runs_dir": str(tmp_path / "runs"), "training": {"device": "cuda"}}
    )
    run_dir = tmp_path / "runs" / "run-1"
    with pytest.raises(ConfigError, match="training.device"):
        simulate(cfg, run_dir)
    assert not (run_dir / "config.json").exists()
    with pytest.raises(ConfigError, match="training.device.*sees no CUDA device"):
        resolve_device("cuda")  # a site told cuda without one: the setting, not an assertion
