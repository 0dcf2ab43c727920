"""The simulated coordinator looks for replies every 10 ms; a deployed grid is left alone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from flwr.serverapp import Grid

from fedsafe.server.federation import SIM_PULL_INTERVAL_S, _poll_faster


def test_flowers_in_memory_grid_polls_faster() -> None:
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    assert InMemoryGrid.__init__.__defaults__ is not None  # Flower's default is 0.1 s
    grid = SimpleNamespace(pull_interval=0.1)
    _poll_faster(cast(Grid, grid))
    assert grid.pull_interval == SIM_PULL_INTERVAL_S


def test_a_grid_without_the_setting_is_left_alone() -> None:
    grid = SimpleNamespace()
    _poll_faster(cast(Grid, grid))
    assert not hasattr(grid, "pull_interval")
