"""Central DP at the coordinator: noise of the right size on the right mean, from the OS, and
client-level epsilon equal to an independent accountant's for the releases actually made."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.serverapp.strategy import FedAvg
from opacus.accountants import RDPAccountant

from fedsafe.common import keys
from fedsafe.common.config import StrategyConfig
from fedsafe.common.privacy.client_level import ClientLevelAccount, plan_client_level
from fedsafe.server.aggregate import AggregateRejectedError, checked_aggregate
from fedsafe.server.central_dp import NOISE_HOOK, CentralDP


@pytest.fixture(autouse=True)
def task_identity() -> None:
    """Flower's runtime names the process' run, node and task; a unit test does it by hand."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


D = 40_000  # coordinates: the empirical std is within ~1% of the true one
CLIP = 0.5


def _account(noise: float = 2.0, cap: float | None = None) -> ClientLevelAccount:
    return ClientLevelAccount(
        mode="central",
        noise_multiplier=noise,
        clipping_norm=CLIP,
        delta=1e-5,
        accountant="rdp",
        planned_rounds=10,
        max_epsilon=cap,
    )


def _reply(node: int, value: np.ndarray) -> Message:
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord({"w": Array(value.astype(np.float32))}),
            keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 1.0}),
        }
    )
    msg = Message(content, dst_node_id=node, message_type=MessageType.TRAIN)
    return msg


def _wrapper(account: ClientLevelAccount, planned: int = 5) -> CentralDP:
    inner = FedAvg(arrayrecord_key=keys.ARRAYS, weighted_by_key=keys.NUM_EXAMPLES)
    dp = CentralDP(inner, account, num_sampled_clients=planned)
    dp.current_arrays = ArrayRecord({"w": Array(np.zeros(D, dtype=np.float32))})
    return dp


def _updates(k: int) -> list[np.ndarray]:
    """Updates far longer than C, so each is clipped to norm C exactly."""
    rng = np.random.default_rng(7)
    return [rng.normal(size=D) * 10 for _ in range(k)]


def _clean_mean(updates: list[np.ndarray]) -> np.ndarray:
    clipped = [u * (CLIP / np.linalg.norm(u.astype(np.float32))) for u in updates]
    return np.mean(clipped, axis=0)


def _noise(dp: CentralDP, updates: list[np.ndarray]) -> np.ndarray:
    arrays, _ = dp.aggregate_train(1, [_reply(i + 1, u) for i, u in enumerate(updates)])
    assert arrays is not None
    return arrays["w"].numpy().astype(np.float64) - _clean_mean(updates)


def test_the_noise_on_the_mean_has_std_z_c_over_the_sites_actually_averaged() -> None:
    """Three of five planned sites answered: noise for 3 (Flower's own would size it for 5)."""
    account = _account(noise=2.0)
    dp = _wrapper(account, planned=5)
    noise = _noise(dp, _updates(3))
    expected = 2.0 * CLIP / 3
    assert np.std(noise) == pytest.approx(expected, rel=0.03)
    assert abs(np.mean(noise)) < 5 * expected / np.sqrt(D)
    assert dp.last_noise_std == pytest.approx(expected) and account.releases == 1


def test_numpys_global_seed_does_not_make_the_noise_predictable() -> None:
    """Whoever can seed numpy in the coordinator's process (config, a library) learns nothing."""
    draws = []
    for _ in range(2):
        np.random.seed(1234)
        draws.append(_noise(_wrapper(_account()), _updates(3)))
    assert not np.allclose(draws[0], draws[1])
    assert np.corrcoef(draws[0], draws[1])[0, 1] < 0.05


def test_flowers_noise_step_is_still_where_the_wrapper_takes_it_over() -> None:
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping as Flower

    assert callable(getattr(Flower, NOISE_HOOK))
    assert CentralDP._add_noise_to_aggregated_arrays is not getattr(Flower, NOISE_HOOK)


def test_a_refused_aggregate_still_counts_as_a_release() -> None:
    """The noise was drawn and the refusal depends on it: the release is charged."""
    account = _account(noise=2.0)
    dp = _wrapper(account)
    limits = StrategyConfig(max_update_norm=1e-6)
    replies = [_reply(i + 1, u) for i, u in enumerate(_updates(3))]
    with pytest.raises(AggregateRejectedError):
        checked_aggregate(dp, 1, replies, dp.current_arrays, limits)
    assert account.releases == 1 and dp.account is account


@pytest.mark.parametrize("releases", [1, 4, 10])
def test_client_level_epsilon_equals_opacus_for_the_releases_made(releases: int) -> None:
    account = _account(noise=1.7)
    account.releases = releases
    reference = RDPAccountant()
    reference.history = [(1.7, 1.0, releases)]
    assert account.epsilon() == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-6)


def test_the_planned_noise_reaches_the_target_and_the_cap_stops_the_next_release() -> None:
    planned = plan_client_level(
        mode="central",
        target_epsilon=3.0,
        noise_multiplier=None,
        clipping_norm=CLIP,
        max_epsilon=2.0,
        delta=1e-5,
        accountant="rdp",
        rounds=10,
    )
    assert 2.9 <= planned.epsilon(10) <= 3.0
    allowed = 0
    while planned.allows_another():
        planned.releases += 1
        allowed += 1
    assert planned.epsilon(allowed) <= 2.0 < planned.epsilon(allowed + 1)
