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


class _Round:
    """One site's (Cleveland's) train round and the server's share, set up once to be timed.

    Imports are local so that `fedsafe bench --only <other>` does not pay for them.
    """

    def __init__(self, tmp: Path) -> None:
        from fedsafe.client.site import simulated_site
        from fedsafe.common import crypto
        from fedsafe.common.config import ExperimentConfig, from_dict
        from fedsafe.common.data import dataset_info
        from fedsafe.common.ledger import Ledger
        from fedsafe.common.models import model_for
        from fedsafe.common.privacy import Charge
        from fedsafe.common.privacy.planner import plan_site

        self.tmp = tmp
        self.cfg = from_dict(
            ExperimentConfig,
            {"runs_dir": str(tmp), "federation": {"fresh_budget": True, "max_epsilon": 1000.0}},
        )
        self.site = simulated_site(self.cfg, 0, "bench-run")
        self.info = dataset_info(self.cfg.dataset.name, self.cfg.dataset)
        model = model_for(self.cfg.model, self.info)
        self.state = {k: v.clone() for k, v in model.state_dict().items()}
        self.arrays = {k: v.numpy() for k, v in self.state.items()}
        self.plan = plan_site(self.cfg.privacy, self.cfg.training, n_train=self.site.data.n_train)
        self.charge = Charge(
            self.plan.noise_multiplier, self.plan.sample_rate, self.plan.steps_per_round
        )
        self.sealing_private, self.sealing_public = crypto.generate_sealing_key()
        self.server_key, self.server_pub = crypto.generate_signing_key()
        self.ledger = Ledger.open(tmp / "ledger.sqlite")
        self.rounds = itertools.count(1)

    def _model(self) -> torch.nn.Module:
        from fedsafe.common.models import model_for

        m = model_for(self.cfg.model, self.info)
        m.load_state_dict(self.state)
        return m

    def train(self) -> None:
        from fedsafe.common.privacy.randomness import OsRandomness
        from fedsafe.common.training import DpSettings, train_local

        train_local(
            self._model(),
            self.site.data.x_train,
            self.site.data.y_train,
            epochs=1,
            batch_size=32,
            learning_rate=0.1,
            device=torch.device("cpu"),
            dp=DpSettings(self.charge.noise_multiplier, 1.0),
            randomness=OsRandomness(),
        )

    def site_runtime(self) -> None:
        from fedsafe.client.site import simulated_site

        simulated_site(self.cfg, 0, "bench-run")

    def budget(self) -> None:
        from fedsafe.client.budget import BudgetStore

        site = self.site
        with BudgetStore.open(site.budget_store, anchor=site.anchor) as store:
            res = store.reserve(
                dataset_id=site.dataset_id,
                run_id="bench-run",
                round=next(self.rounds),
                charge=self.charge,
                policy=site.policy,
                purpose=self.cfg.compliance.purpose,
                fingerprint=site.fingerprint,
            )
            store.complete(res, steps_taken=self.plan.steps_per_round)
            store.spent(site.dataset_id, delta=1e-5, accountant="rdp")

    def plan_uncached(self) -> None:
        from fedsafe.common.privacy import accountants
        from fedsafe.common.privacy.planner import plan_site

        plan_site.cache_clear()
        accountants._rdp_one_step.cache_clear()
        accountants._rdp_one_step_integer.cache_clear()
        plan_site(self.cfg.privacy, self.cfg.training, n_train=self.site.data.n_train)

    def evaluate(self) -> None:
        from fedsafe.common.training import eval_counts

        data = self.site.data
        eval_counts(
            self._model(), data.x_test, data.y_test, device=torch.device("cpu"), loss_clip=10.0
        )

    def attest(self) -> None:
        from fedsafe.common.attestation import arrays_digest, attestation_payload, sign_statement

        payload = attestation_payload(
            site=self.site.name,
            run_id="r",
            server_round=1,
            epsilon=1.0,
            delta=1e-5,
            steps=8,
            update_digest=arrays_digest(self.arrays),
        )
        sign_statement(payload, self.site.signing_key)

    def seal_open(self) -> None:
        from fedsafe.common import crypto
        from fedsafe.common.wire import pack_arrays, sealing_context

        ctx = sealing_context("r", 1, self.site.name)
        blob = crypto.seal(self.sealing_public, pack_arrays(self.arrays), context=ctx)
        crypto.open_sealed(self.sealing_private, blob, context=ctx)

    def ledger_round(self) -> None:
        """Per round: a consent decision and an attestation per site (one transaction each, as
        server/compliance.py writes them), the aggregate, then a signed head + witness."""
        from fedsafe.common.ledger import records

        name = self.site.name
        for _ in range(4):
            self.ledger.append(
                records.CONSENT_DECISION,
                {"site": name, "round": 1, "decision": "granted", "reason": "ok"},
            )
            self.ledger.append(
                records.ATTESTATION,
                {"site": name, "signature": "00" * 65, "signed": {"site": name, "round": 1}},
            )
        self.ledger.append(
            records.ROUND_AGGREGATED, {"round": 1, "sites": [], "aggregate_digest": "0"}
        )
        self.ledger.sign_head(
            self.server_key, public_pem=self.server_pub, witness_path=self.tmp / "witness.json"
        )


def _components(tmp: Path) -> dict[str, Callable[[], object]]:
    """One site's train round, cut into its parts (the first is the real work), plus the
    server's share."""
    r = _Round(tmp)
    return {
        "DP training, one local epoch (the real work)": r.train,
        "site runtime: keys from disk + cached data": r.site_runtime,
        "privacy plan: noise search (uncached)": r.plan_uncached,
        "budget store: reserve+complete+spent, fsync": r.budget,
        "site evaluate: held-out loss, acc, bal.acc, AUROC": r.evaluate,
        "attestation: digest + Ed25519 sign": r.attest,
        "seal + open update (X25519, AES-GCM)": r.seal_open,
        "server ledger per round: 9 appends + head": r.ledger_round,
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
