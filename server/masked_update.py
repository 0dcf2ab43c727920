"""The check of one site's SecAgg+ masked vector: the attestation must commit to its bytes.

Under secure aggregation the coordinator never sees a site's update, only a masked vector
that is uniformly random on its own. What it can still hold the site to is the site's signed
statement: this run, this round, this site, the DP parameters it trained with (checked like a
sealed round's, see ``attested.py``), the weight it claims, and ``update_digest`` equal to the
digest of the masked bytes received. A vector nobody vouched for never enters the sum.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, MetricRecord, RecordDict
from flwr.compat.common import recorddict_compat as compat

from fedsafe.common import keys
from fedsafe.common.secagg import MASKING_NAME
from fedsafe.server.attested import check_attested
from fedsafe.server.compliance import Compliance
from fedsafe.server.validation import RejectedUpdateError, reply_site_name

__all__ = ["verify_masked_update"]


def _check_noise_share(site: str, attested: object, expected: dict[str, float]) -> None:
    """Distributed DP: the site must attest the run's noise multiplier, clipping norm and
    threshold, and a share variance at least the one they imply."""
    if not isinstance(attested, dict):
        raise RejectedUpdateError(f"site '{site}': attests no distributed DP noise share")
    for name in ("noise_multiplier", "clipping_norm", "threshold"):
        if attested.get(name) != expected[name]:
            raise RejectedUpdateError(
                f"site '{site}': attested {name} {attested.get(name)!r} != {expected[name]!r}"
            )
    variance = attested.get("share_variance")
    if not isinstance(variance, int | float) or not variance >= expected["share_variance"]:
        raise RejectedUpdateError(
            f"site '{site}': attested share variance {variance!r} is below the "
            f"{expected['share_variance']:g} this round needs"
        )


def verify_masked_update(
    compliance: Compliance,
    server_round: int,
    node_id: int,
    content: RecordDict,
    digest: str,
    *,
    max_weight: float,
    noise_share: dict[str, float] | None = None,
) -> RecordDict:
    """The verified reply (site, scalar metrics, signed statement), or RejectedUpdateError."""
    site = compliance.roster.get(node_id)
    if site is None:
        raise RejectedUpdateError(f"node {node_id} is not on this run's roster")
    claimed = reply_site_name(content)
    if claimed != site:
        raise RejectedUpdateError(f"reply names site '{claimed}'; this node is '{site}'")
    fitres = compat.recorddict_to_fitres(content, keep_input=True)
    metrics = MetricRecord(
        {
            k: float(v)
            for k, v in fitres.metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    )
    signed = compliance.signed_attestation(
        site, content, server_round, update_digest=digest, masking=MASKING_NAME
    )
    examples = check_attested(site, signed, metrics, compliance.privacy)
    if fitres.num_examples != examples:
        raise RejectedUpdateError(
            f"site '{site}': masked with weight {fitres.num_examples}, attested {examples}"
        )
    if noise_share is not None:
        _check_noise_share(site, signed.get("client_level"), noise_share)
    if examples > max_weight:
        raise RejectedUpdateError(
            f"site '{site}': attested weight {examples} exceeds the round's max_weight "
            f"{max_weight:g} (the sum would overflow)"
        )
    return RecordDict(
        {
            keys.SITE: ConfigRecord({keys.SITE_NAME: site}),
            keys.METRICS: metrics,
            keys.ATTESTATION: content.config_records[keys.ATTESTATION],
        }
    )
