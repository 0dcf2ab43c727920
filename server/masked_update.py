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


def verify_masked_update(
    compliance: Compliance,
    server_round: int,
    node_id: int,
    content: RecordDict,
    digest: str,
    *,
    max_weight: float,
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
