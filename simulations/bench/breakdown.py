"""Where a fedsafe round's extra time goes: each protection timed alone, in process."""

from __future__ import annotations

import itertools
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from fedsafe.simulations.bench.rows import Row, summarize
from fedsafe.simulations.bench.timing import interleave

__all__ = ["breakdown_rows"]


def _components(tmp: Path) -> dict[str, Callable[[], object]]:
    """One site's (Cleveland's) train round, cut into its parts, plus the server's share."""
    from fedsafe.client.budget import BudgetStore
    from fedsafe.client.site import simulated_site
    from fedsafe.common import crypto
    from fedsafe.common.attestation import arrays_digest, attestation_payload, sign_statement
    from fedsafe.common.config import ExperimentConfig, from_dict
    from fedsafe.common.data import dataset_info
    from fedsafe.common.ledger import Ledger, records
    from fedsafe.common.models import model_for
    from fedsafe.common.privacy import Charge
    from fedsafe.common.privacy.planner import plan_site
    from fedsafe.common.privacy.randomness import OsRandomness
    from fedsafe.common.training import DpSettings, eval_counts, train_local
    from fedsafe.common.wire import pack_arrays, sealing_context

    cfg = from_dict(
        ExperimentConfig,
        {"runs_dir": str(tmp), "federation": {"fresh_budget": True, "max_epsilon": 1000.0}},
    )
    site = simulated_site(cfg, 0, "bench-run")
    model = model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    arrays = {k: v.numpy() for k, v in state.items()}
    plan = plan_site(cfg.privacy, cfg.training, n_train=site.data.n_train)
    charge = Charge(plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)
    sealing_private, sealing_public = crypto.generate_sealing_key()
    server_key, server_pub = crypto.generate_signing_key()
    ledger = Ledger.open(tmp / "ledger.sqlite")
    counter = itertools.count(1)

    def train() -> None:
        m = model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset))
        m.load_state_dict(state)
        train_local(
            m,
            site.data.x_train,
            site.data.y_train,
            epochs=1,
            batch_size=32,
            learning_rate=0.1,
            device=torch.device("cpu"),
            dp=DpSettings(charge.noise_multiplier, 1.0),
            randomness=OsRandomness(),
        )

    def budget() -> None:
        with BudgetStore.open(site.budget_store, anchor=site.anchor) as store:
            res = store.reserve(
                dataset_id=site.dataset_id,
                run_id="bench-run",
                round=next(counter),
                charge=charge,
                policy=site.policy,
                purpose=cfg.compliance.purpose,
                fingerprint=site.fingerprint,
            )
            store.complete(res, steps_taken=plan.steps_per_round)
            store.spent(site.dataset_id, delta=1e-5, accountant="rdp")

    def plan_uncached() -> None:
        from fedsafe.common.privacy import accountants

        plan_site.cache_clear()
        accountants._rdp_one_step.cache_clear()
        plan_site(cfg.privacy, cfg.training, n_train=site.data.n_train)

    def evaluate_site() -> None:
        m = model_for(cfg.model, dataset_info(cfg.dataset.name, cfg.dataset))
        m.load_state_dict(state)
        eval_counts(
            m, site.data.x_test, site.data.y_test, device=torch.device("cpu"), loss_clip=10.0
        )

    def attest() -> None:
        payload = attestation_payload(
            site=site.name,
            run_id="r",
            server_round=1,
            epsilon=1.0,
            delta=1e-5,
            steps=8,
            update_digest=arrays_digest(arrays),
        )
        sign_statement(payload, site.signing_key)

    def seal_open() -> None:
        ctx = sealing_context("r", 1, site.name)
        blob = crypto.seal(sealing_public, pack_arrays(arrays), context=ctx)
        crypto.open_sealed(sealing_private, blob, context=ctx)

    def ledger_round() -> None:
        # Per round: a consent decision and an attestation per site (one transaction each, as
        # server/compliance.py writes them), the aggregate, then a signed head + witness.
        for _ in range(4):
            ledger.append(
                records.CONSENT_DECISION,
                {"site": site.name, "round": 1, "decision": "granted", "reason": "ok"},
            )
            ledger.append(
                records.ATTESTATION,
                {
                    "site": site.name,
                    "signature": "00" * 65,
                    "signed": {"site": site.name, "round": 1},
                },
            )
        ledger.append(records.ROUND_AGGREGATED, {"round": 1, "sites": [], "aggregate_digest": "0"})
        ledger.sign_head(server_key, public_pem=server_pub, witness_path=tmp / "witness.json")

    return {
        "DP training, one local epoch (the real work)": train,
        "site runtime: keys from disk + cached data": lambda: simulated_site(cfg, 0, "bench-run"),
        "privacy plan: noise search (uncached)": plan_uncached,
        "budget store: reserve+complete+spent, fsync": budget,
        "site evaluate: held-out loss, acc, bal.acc, AUROC": evaluate_site,
        "attestation: digest + Ed25519 sign": attest,
        "seal + open update (X25519, AES-GCM)": seal_open,
        "server ledger per round: 9 appends + head": ledger_round,
    }


def breakdown_rows(*, repeats: int = 10) -> list[Row]:
    """Each part of a protected round in ms, and as a share of the DP training itself."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fedsafe-breakdown-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = _components(Path(tmp))
        for fn in parts.values():
            fn()
        samples = interleave(parts, repeats=repeats)
    train_name = next(iter(parts))
    t_lo, t_med, _ = summarize(samples[train_name])
    rows = []
    for name, s in samples.items():
        lo, med, n = summarize([v * 1e3 for v in s])
        is_train = name == train_name
        rows.append(
            Row(
                "round_overhead",
                f"part: {name}",
                "ms",
                lo,
                med,
                n,
                baseline=None if is_train else "DP training",
                ratio_min=None if is_train else min(s) / t_lo,
                ratio_median=None if is_train else sorted(s)[len(s) // 2] / t_med,
            )
        )
    return rows
