"""What a site records besides DP-SGD rounds: non-private rounds and evaluation releases."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import insert, select

from fedsafe.client.budget.judge import judge_charge
from fedsafe.client.budget.pins import overlap_refusal, pin_refusal
from fedsafe.client.budget.reading import row_charge
from fedsafe.client.budget.records import PolicyRefusedError, RoundRefusedError
from fedsafe.client.budget.schema import charges_table, releases_table
from fedsafe.client.budget.store import NONPRIVATE_CHARGE, BudgetStore
from fedsafe.client.policy import SitePolicy
from fedsafe.common.privacy.accountants import Charge

__all__ = ["record_nonprivate", "record_evaluation"]


def _disclosures(conn: Any, dataset_id: str) -> int:
    """Evaluations released without a DP charge on this data set, in every run."""
    rows = conn.execute(
        select(releases_table.c.id).where(
            releases_table.c.dataset_id == dataset_id,
            releases_table.c.kind == "evaluate",
            releases_table.c.mode.in_(("exact", "rounded")),
        )
    )
    return len(list(rows))


def record_nonprivate(
    store: BudgetStore,
    *,
    dataset_id: str,
    run_id: str,
    round: int,
    policy: SitePolicy,
    fingerprint: str | None,
    purpose: str | None,
    records: np.ndarray | None = None,
    at_time: datetime | None = None,
) -> None:
    """A round trained without DP: on record, and the data set's epsilon is infinite from now on.

    Records another data set already holds are refused here too: a non-private round on them
    would leave that data set's finite epsilon standing for records that are now exposed.
    """
    time = store._now(at_time)
    refusal: RoundRefusedError | None = None
    with store._write() as conn:
        existing = conn.execute(
            select(charges_table.c.id).where(
                charges_table.c.dataset_id == dataset_id,
                charges_table.c.run_id == run_id,
                charges_table.c.round == round,
                charges_table.c.kind == "nonprivate",
            )
        ).first()
        ids: dict[str, Any] = {"dataset_id": dataset_id, "run_id": run_id, "round": round}
        if existing is None and records is not None:
            refusal = overlap_refusal(conn, records, policy, **ids)
        if existing is None and refusal is None:
            store._insert(
                conn,
                charge=NONPRIVATE_CHARGE,
                policy=policy,
                purpose=purpose,
                fingerprint=fingerprint,
                records=records,
                binding=None,
                kind="nonprivate",
                time=time,
                status="completed",
                **ids,
            )
        elif refusal is not None:
            store._refuse(conn, refusal, time)
    if refusal is not None:
        raise refusal


def record_evaluation(
    store: BudgetStore,
    *,
    dataset_id: str,
    run_id: str,
    round: int,
    mode: str,
    model_digest: str,
    released: dict[str, Any],
    charge: Charge | None,
    policy: SitePolicy,
    purpose: str | None,
    limit: int | None = None,
    at_time: datetime | None = None,
) -> dict[str, Any]:
    """Record one evaluation release of (run, round), charging `charge` first when it has one.

    The site evaluates only a round it trained in, at most once per (run, round); asked again
    for the same model it re-sends what it released (post-processing), for another model it
    refuses. Returns what may leave.
    """
    time = store._now(at_time)
    ids: dict[str, Any] = {"dataset_id": dataset_id, "run_id": run_id, "round": round}
    refusal: RoundRefusedError | None
    with store._write() as conn:
        refusal, again = _release_refusal(
            conn, ids=ids, model_digest=model_digest, charge=charge, limit=limit, policy=policy
        )
        if again is not None:
            return again
        if refusal is None and charge is not None:
            refusal = _charge_evaluation(
                store, conn, charge, policy, purpose, model_digest, time=time, ids=ids
            )
        if refusal is None:
            conn.execute(
                insert(releases_table).values(
                    kind="evaluate",
                    mode=mode,
                    model_digest=model_digest,
                    released=json.dumps(released, sort_keys=True),
                    time=time,
                    **ids,
                )
            )
            return released
        store._refuse(conn, refusal, time)
    raise refusal


def _refused(message: str, policy: SitePolicy, ids: dict[str, Any]) -> PolicyRefusedError:
    return PolicyRefusedError(message, reason="policy", cap=policy.max_epsilon, **ids)


def _release_refusal(
    conn: Any,
    *,
    ids: dict[str, Any],
    model_digest: str,
    charge: Charge | None,
    limit: int | None,
    policy: SitePolicy,
) -> tuple[PolicyRefusedError | None, dict[str, Any] | None]:
    """May this evaluation leave? A round the site trained in, once per (run, round), within
    the limit of non-DP evaluations. Returns (refusal, the earlier release of the same model)."""
    run_id, round = ids["run_id"], ids["round"]
    trained = conn.execute(
        select(charges_table.c.id).where(
            charges_table.c.dataset_id == ids["dataset_id"],
            charges_table.c.run_id == run_id,
            charges_table.c.round == round,
            charges_table.c.kind.in_(("train", "nonprivate")),
            charges_table.c.status == "completed",
        )
    ).first()
    if trained is None:
        return _refused(
            f"site refused to evaluate run '{run_id}', round {round}: it evaluates only "
            "the global model of a round it trained in (release policy)",
            policy,
            ids,
        ), None
    before = conn.execute(
        select(releases_table).where(
            releases_table.c.dataset_id == ids["dataset_id"],
            releases_table.c.run_id == run_id,
            releases_table.c.round == round,
            releases_table.c.kind == "evaluate",
        )
    ).first()
    if before is not None:
        if before.model_digest == model_digest:
            return None, dict(json.loads(before.released))
        return _refused(
            f"site refused a second evaluation of run '{run_id}', round {round} on another "
            "model: at most one evaluation per (run, round) leaves the site (release policy)",
            policy,
            ids,
        ), None
    if limit is not None and charge is None and _disclosures(conn, ids["dataset_id"]) >= limit:
        return _refused(
            f"site refused to evaluate run '{run_id}', round {round}: it already released "
            f"{limit} non-DP evaluation(s) of this data set (release.max_evaluations)",
            policy,
            ids,
        ), None
    return None, None


def _charge_evaluation(
    store: BudgetStore,
    conn: Any,
    charge: Charge,
    policy: SitePolicy,
    purpose: str | None,
    model_digest: str,
    *,
    time: str,
    ids: dict[str, Any],
) -> RoundRefusedError | None:
    """Charge a DP evaluation to the data set's budget, or say why not."""
    history = [row_charge(r) for r in store._rows(conn, ids["dataset_id"])]
    refusal = pin_refusal(conn, policy=policy, fingerprint=None, records=None, **ids) or (
        judge_charge(
            history, charge=charge, policy=policy, purpose=purpose, check_noise_floor=False, **ids
        )
    )
    if refusal is None:
        store._insert(
            conn,
            charge=charge,
            policy=policy,
            purpose=purpose,
            fingerprint=None,
            binding={"model_digest": model_digest},
            kind="evaluate",
            time=time,
            status="completed",
            **ids,
        )
    return refusal
