"""Property tests: random runs, rounds, skips, crashes, replays and restarts never break the cap."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fedsafe.client.budget import BudgetStore, PolicyRefusedError, RoundRefusedError
from fedsafe.client.policy import SitePolicy
from fedsafe.common.privacy.accountants import Charge, epsilon_for

DELTA = 1e-5
# A few (noise, rate) pairs so that RDP's per-pair cache keeps each example fast.
CHARGES = [Charge(1.0, 0.05, 10), Charge(1.5, 0.1, 20), Charge(2.5, 0.2, 30), Charge(0.8, 0.02, 5)]


@dataclass(frozen=True)
class Step:
    """One federation round as a site sees it."""

    action: str  # train | skip | crash | replay
    charge_index: int
    fraction: float  # steps taken / planned when it trains


steps = st.builds(
    Step,
    action=st.sampled_from(["train", "train", "train", "skip", "crash", "replay"]),
    charge_index=st.integers(0, len(CHARGES) - 1),
    fraction=st.sampled_from([1.0, 1.0, 0.5, 0.0]),
)
schedules = st.lists(
    st.tuples(st.sampled_from(["cleveland", "hungary"]), st.lists(steps, max_size=8)),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None)
@given(schedule=schedules, cap=st.floats(0.3, 6.0))
def test_random_schedules_keep_every_invariant(
    schedule: list[tuple[str, list[Step]]], cap: float
) -> None:
    policy = SitePolicy(max_epsilon=cap, delta=DELTA, min_noise_multiplier=0.5)
    model: dict[str, list[Charge]] = {"cleveland": [], "hungary": []}
    refusals = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "budget.db"
        for run_number, (dataset, rounds) in enumerate(schedule):
            run_id = f"run-{run_number}"
            done: list[tuple[int, Charge]] = []  # rounds charged in this run, and their charge
            with BudgetStore.open(path) as store:  # every run is a restart
                for rnd, step in enumerate(rounds, start=1):
                    if step.action == "skip":
                        continue  # a skipped round adds nothing
                    if step.action == "replay" and done:
                        before = store.history(dataset)
                        last, reserved = done[-1]
                        asked = CHARGES[step.charge_index]
                        try:
                            again = store.reserve(
                                dataset_id=dataset,
                                run_id=run_id,
                                round=last,
                                charge=asked,
                                policy=policy,
                                purpose=None,
                            )
                        except PolicyRefusedError as err:
                            # A replay binds the reservation: other parameters are refused.
                            assert asked != reserved and err.reason == "replay"
                            refusals += 1
                        else:
                            assert asked == reserved and again.replayed
                        assert store.history(dataset) == before
                        continue
                    charge = CHARGES[step.charge_index]
                    would_be = epsilon_for([*model[dataset], charge], delta=DELTA)
                    try:
                        res = store.reserve(
                            dataset_id=dataset,
                            run_id=run_id,
                            round=rnd,
                            charge=charge,
                            policy=policy,
                            purpose=None,
                        )
                    except RoundRefusedError as err:
                        assert would_be > cap
                        assert err.spent_epsilon == epsilon_for(model[dataset], delta=DELTA)
                        refusals += 1
                        assert len(store.refusals()) == refusals
                        continue
                    assert would_be <= cap and not res.replayed
                    model[dataset].append(charge)
                    assert res.epsilon_after == epsilon_for(model[dataset], delta=DELTA)
                    done.append((rnd, charge))
                    if step.action == "crash":
                        continue  # reserved, never completed: counted at planned steps
                    taken = int(charge.steps * step.fraction)
                    res = store.complete(res, steps_taken=taken)
                    model[dataset][-1] = Charge(charge.noise_multiplier, charge.sample_rate, taken)
                    reported = res.epsilon_after
                    assert reported == epsilon_for(store.history(dataset), delta=DELTA)
                    assert reported == store.spent(dataset, delta=DELTA, accountant="rdp")
                for name, charges in model.items():
                    assert store.history(name) == charges
                    assert store.spent(name, delta=DELTA, accountant="rdp") <= cap
        with BudgetStore.open(path) as store:
            assert len(store.refusals()) == refusals
            for name, charges in model.items():
                records = store.charges(name)
                keys = [(r.run_id, r.round) for r in records]
                assert len(keys) == len(set(keys))  # never double-charged
                spent = store.spent(name, delta=DELTA, accountant="rdp")
                assert spent == epsilon_for(charges, delta=DELTA) <= cap
                runs = store.runs(name, delta=DELTA, accountant="rdp")
                if charges:
                    assert max(r.epsilon_after for r in runs) == spent
