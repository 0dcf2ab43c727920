"""The run's compliance record: enrolled site keys, consent per round, attestations, the ledger.

Every decision the coordinator takes about a site (admitted, excluded, update dropped) is
appended to the run's hash-chained ledger, and the chain head is signed with the server's
Ed25519 key at the end of every round, with a witness file beside the ledger.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord, RecordDict

from fedsafe.common import crypto, keys
from fedsafe.common.attestation import ATTESTATION, IDENTITY, arrays_digest, open_statement
from fedsafe.common.config import PrivacyConfig
from fedsafe.common.consent import SignedConsent, withdrawal_from_dict, withdrawal_to_dict
from fedsafe.common.errors import ConfigError, FedsafeError, IntegrityError
from fedsafe.common.ledger import Ledger, records
from fedsafe.common.names import check_name
from fedsafe.common.wire import sealing_context, unpack_arrays
from fedsafe.server.attested import MAX_EXAMPLES, check_attested
from fedsafe.server.consent import ConsentRegistry
from fedsafe.server.coordinator_keys import CoordinatorKeys
from fedsafe.server.validation import RejectedUpdateError, reply_site_name

__all__ = ["Compliance", "CoordinatorKeys", "RejectedUpdateError"]

log = logging.getLogger("fedsafe.server")


@dataclass
class Compliance:
    """One run's consent gate, attestation check and ledger writer."""

    run_id: str
    purpose: str
    dataset: str
    jurisdictions: tuple[str, ...] | None
    ledger: Ledger
    witness: Path
    coordinator: CoordinatorKeys
    consent: ConsentRegistry
    simulated_key_dirs: dict[str, Path] = field(default_factory=dict)
    # The run's DP terms the attestations are checked against (enabled, delta, accountant).
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    roster: dict[int, str] = field(default_factory=dict)
    refused_nodes: set[int] = field(default_factory=set)
    example_counts: dict[int, int] = field(default_factory=dict)  # node -> signed n (secagg)
    require_counts: bool = False  # secure aggregation: an identity must declare its count
    decode: Callable[[bytes], dict[str, Any]] = unpack_arrays  # the round's (quantised_update)
    _pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    attestations: list[dict[str, Any]] = field(default_factory=list)
    _withdrawn: set[tuple[str, str]] | None = None  # (site, record_id) withdrawn per the ledger

    # --- keys ------------------------------------------------------------------------------

    def site_key(self, site: str) -> bytes | None:
        """The site's enrolled Ed25519 key; a simulated site is enrolled from its own folder.

        Only `<site_keys_dir>/<name>.pub` for a valid name is ever read: a claimed name such
        as `../planted` is refused before any path is built from it.
        """
        try:
            check_name("site name", site)
        except ConfigError as err:
            raise RejectedUpdateError(f"claimed site name refused: {err}") from None
        enrolled = self.coordinator.site_keys_dir / f"{site}.pub"
        if not enrolled.exists() and site in self.simulated_key_dirs:
            source = self.simulated_key_dirs[site] / "signing.pub"
            if source.exists():
                enrolled.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, enrolled)
                log.info(
                    "enrolled simulated site %s (%s)",
                    site,
                    crypto.public_key_fingerprint(enrolled.read_bytes())[:16],
                )
        return enrolled.read_bytes() if enrolled.exists() else None

    # --- roll call -------------------------------------------------------------------------

    def admit_identity(self, node_id: int, content: RecordDict) -> str:
        """Check a roll-call reply: a known site, signing this run's identity with its key."""
        claimed = reply_site_name(content)
        public = self.site_key(claimed)
        if public is None:
            raise RejectedUpdateError(
                f"site '{claimed}' is not enrolled (no signing key on record)"
            )
        if claimed in self.roster.values():
            raise RejectedUpdateError(f"site '{claimed}' already answered from another node")
        try:
            statement = open_statement(IDENTITY, content[keys.IDENTITY], public)
        except (IntegrityError, KeyError) as err:
            raise RejectedUpdateError(
                f"site '{claimed}': identity does not verify ({err})"
            ) from None
        if statement.get("site") != claimed or statement.get("run_id") != self.run_id:
            raise RejectedUpdateError(f"site '{claimed}': identity names another site or run")
        count = statement.get("num_examples")
        if count is None and self.require_counts:
            raise RejectedUpdateError(
                f"site '{claimed}': identity declares no num_examples; secure aggregation "
                "sizes its weights from the signed counts"
            )
        if count is not None:  # secure aggregation sizes its weights from the signed counts
            if (
                isinstance(count, bool)
                or not isinstance(count, int)
                or not 0 < count <= MAX_EXAMPLES
            ):
                raise RejectedUpdateError(
                    f"site '{claimed}': identity num_examples {count!r} is not in [1, 2**53]"
                )
            self.example_counts[node_id] = count
        self.roster[node_id] = claimed
        self.refused_nodes.discard(node_id)
        try:
            self.absorb_consent(claimed, content)
        except RejectedUpdateError as err:
            # The identity holds; the consent gate decides each round from what is on record.
            log.warning("roll call: %s", err)
            self.error("consent", f"site {claimed}: consent sent at roll call not stored: {err}")
        return claimed

    def absorb_consent(self, site: str, content: RecordDict, server_round: int = 0) -> None:
        """Store site-signed grants and withdrawals carried by a reply, verified first.

        Anything malformed, forged, or clashing with what is on record raises
        RejectedUpdateError naming the site; a withdrawal is also written to the ledger, so
        deleting its row from the consent store cannot silently re-admit the site.
        """
        if keys.CONSENT not in content:
            return
        public = self.site_key(site)
        if public is None:
            raise RejectedUpdateError(f"site '{site}' is not enrolled (no signing key on record)")
        try:
            body = json.loads(str(content[keys.CONSENT]["json"]))
            grants, withdrawals = body.get("grants", []), body.get("withdrawals", [])
            if not isinstance(grants, list) or not isinstance(withdrawals, list):
                raise TypeError("'grants' and 'withdrawals' must be lists")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise RejectedUpdateError(
                f"site '{site}': consent payload is not a JSON object of grant and withdrawal "
                f"lists ({type(err).__name__}: {err})"
            ) from None
        for index, grant in enumerate(grants):
            try:
                signed = SignedConsent.from_dict(grant)
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise RejectedUpdateError(
                    f"site '{site}': consent grant [{index}] is malformed ({err})"
                ) from None
            if signed.record.site != site:
                raise RejectedUpdateError(f"site '{site}' sent consent for '{signed.record.site}'")
            try:
                self.consent.grant(signed, public)
            except FedsafeError as err:
                raise RejectedUpdateError(f"site '{site}': consent grant refused: {err}") from None
        for index, item in enumerate(withdrawals):
            try:
                withdrawal = withdrawal_from_dict(item)
            except (TypeError, ValueError, AttributeError) as err:
                raise RejectedUpdateError(
                    f"site '{site}': withdrawal [{index}] is malformed ({err})"
                ) from None
            if withdrawal.site != site:
                raise RejectedUpdateError(
                    f"site '{site}' sent a withdrawal for '{withdrawal.site}'"
                )
            try:
                self.consent.withdraw(withdrawal, public)
            except FedsafeError as err:
                raise RejectedUpdateError(f"site '{site}': withdrawal refused: {err}") from None
            self._record_withdrawal(site, withdrawal, server_round)
            log.warning("site %s withdrew consent %s", site, withdrawal.record_id)

    def _record_withdrawal(self, site: str, withdrawal: Any, server_round: int) -> None:
        """The ledger keeps the signed withdrawal: the tamper-evident copy the gate consults."""
        payload = {
            "site": site,
            "round": server_round,
            "decision": "withdrawn",
            "reason": f"site signed a withdrawal of consent {withdrawal.record_id}",
            "record_id": withdrawal.record_id,
            "withdrawal": withdrawal_to_dict(withdrawal),
        }
        self._pending.append((records.CONSENT_DECISION, payload))
        self.flush()
        self.withdrawn_on_ledger().add((site, withdrawal.record_id))

    def withdrawn_on_ledger(self) -> set[tuple[str, str]]:
        """(site, record_id) of every consent this run's ledger records as withdrawn."""
        if self._withdrawn is None:
            self._withdrawn = {
                (str(e.payload.get("site")), str(e.payload.get("record_id")))
                for e in self.ledger.entries()
                if e.kind == records.CONSENT_DECISION
                and e.payload.get("decision") == "withdrawn"
                and e.payload.get("record_id") is not None
            }
        return self._withdrawn

    # --- per round -------------------------------------------------------------------------

    def admitted(self, server_round: int, node_ids: list[int]) -> set[int]:
        """Nodes whose site holds valid, signed consent for the run's purpose now; all logged."""
        allowed: set[int] = set()
        now = datetime.now(UTC)
        withdrawn = self.withdrawn_on_ledger()
        for node in node_ids:
            site = self.roster.get(node)
            if site is None or node in self.refused_nodes:
                payload = {
                    "site": site or f"node-{node}",
                    "round": server_round,
                    "decision": "refused",
                    "reason": "did not answer the roll call with a verified identity",
                }
            else:
                decision = self.consent.decide(
                    site=site,
                    dataset=self.dataset,
                    purpose=self.purpose,
                    at_time=now,
                    jurisdictions=self.jurisdictions,
                    site_public_pem=self.site_key(site) or b"",
                )
                payload = decision.ledger_payload(server_round)
                payload["record_id"] = decision.record_id
                payload["legal_basis"] = decision.legal_basis
                if decision.allowed and (site, str(decision.record_id)) in withdrawn:
                    payload["decision"] = "refused"
                    payload["reason"] = (
                        f"consent {decision.record_id} was withdrawn per this run's ledger, but "
                        "the consent store no longer holds the withdrawal: the store was edited"
                    )
                elif decision.allowed:
                    allowed.add(node)
            self.decisions.append(payload)
            self._pending.append((records.CONSENT_DECISION, payload))
            if payload["decision"] != "granted":
                log.warning(
                    "round %d: %s excluded: %s", server_round, payload["site"], payload["reason"]
                )
        self.flush()
        return allowed

    def flush(self) -> None:
        """Commit what this phase decided as one transaction: one fsync, not one per site."""
        if self._pending:
            self.ledger.append_many(self._pending)
            self._pending = []

    def unseal(
        self, server_round: int, node_id: int, content: RecordDict, *, required: bool
    ) -> None:
        """Open a sealed update in place (ciphertext out, arrays in); refuse plaintext if required.

        A wrong key, any flipped byte, or a blob sealed for another run, round or site fails
        to open (AES-GCM with run, round and site bound in as associated data).
        """
        site = self.roster.get(node_id, f"node-{node_id}")
        if keys.SEALED not in content:
            if required:
                raise RejectedUpdateError(
                    f"site '{site}': update was not sealed; this run requires sealed updates"
                )
            return
        if keys.ARRAYS in content:
            raise RejectedUpdateError(f"site '{site}': update carries both sealed and plain arrays")
        try:
            blob = content.config_records[keys.SEALED]["blob"]
            if not isinstance(blob, bytes):  # bytes(n) of an int n would allocate n bytes
                raise TypeError(f"sealed blob is {type(blob).__name__}, not bytes")
            plain = crypto.open_sealed(
                self.coordinator.sealing_private,
                blob,
                context=sealing_context(self.run_id, server_round, site),
            )
        except (IntegrityError, KeyError, TypeError):
            raise RejectedUpdateError(
                f"site '{site}': sealed update does not open (wrong key, altered, or sealed "
                "for another run/round/site)"
            ) from None
        del content[keys.SEALED]
        content[keys.ARRAYS] = ArrayRecord({k: Array(v) for k, v in self.decode(plain).items()})

    def verify_update(self, server_round: int, node_id: int, content: RecordDict) -> str:
        """Check the attestation against the enrolled key and the arrays actually received."""
        site = self.roster.get(node_id)
        if site is None:
            raise RejectedUpdateError(f"node {node_id} is not on this run's roster")
        arrays = content.array_records[keys.ARRAYS]
        received = arrays_digest({k: v.numpy() for k, v in arrays.items()})
        signed = self.signed_attestation(site, content, server_round, update_digest=received)
        check_attested(site, signed, content.metric_records[keys.METRICS], self.privacy)
        return site

    def signed_attestation(
        self, site: str, content: RecordDict, server_round: int, **expected: Any
    ) -> dict[str, Any]:
        """The site's attestation of a completed round of this run, verified against its
        enrolled key, with each field in `expected` (e.g. the digest received) as given."""
        public = self.site_key(site)
        if keys.ATTESTATION not in content or public is None:
            raise RejectedUpdateError(f"site '{site}': update has no attestation")
        try:
            signed = open_statement(ATTESTATION, content[keys.ATTESTATION], public)
        except IntegrityError:
            raise RejectedUpdateError(
                f"site '{site}': attestation signature does not verify"
            ) from None
        except (ValueError, TypeError) as err:  # a valid signature over text that is not JSON
            raise RejectedUpdateError(
                f"site '{site}': attestation is not canonical JSON ({err})"
            ) from None
        if not isinstance(signed, dict):
            raise RejectedUpdateError(f"site '{site}': attestation is not a JSON object")
        wanted = {"site": site, "run_id": self.run_id, "round": server_round, **expected}
        for name, value in wanted.items():
            if signed.get(name) != value:
                raise RejectedUpdateError(
                    f"site '{site}': attested {name} {signed.get(name)!r} != {value!r}"
                )
        if signed.get("refused") is not False:
            raise RejectedUpdateError(f"site '{site}': attestation is not of a completed round")
        return signed

    def record_attestation(self, site: str, content: RecordDict) -> None:
        statement = content.config_records[keys.ATTESTATION]
        signed = json.loads(str(statement["payload"]))
        signature = statement["signature"]
        if not isinstance(signature, bytes):  # verify_update has checked it; never reached
            raise RejectedUpdateError(f"site '{site}': attestation signature is not bytes")
        payload = {"site": site, "signature": signature.hex(), "signed": signed}
        self.attestations.append(signed)
        self._pending.append((records.ATTESTATION, payload))

    def dropped(self, server_round: int, site: str, reason: str) -> None:
        payload = {"site": site, "round": server_round, "reason": reason}
        self._pending.append((records.DROPOUT, payload))

    def error(self, component: str, message: str, server_round: int | None = None) -> None:
        payload: dict[str, Any] = {"component": component, "message": message}
        if server_round is not None:
            payload["round"] = server_round
        self._pending.append((records.ERROR, payload))
        self.flush()

    def round_aggregated(
        self,
        server_round: int,
        sites: list[str],
        aggregate_digest: str,
        metrics: dict[str, float],
        *,
        weights: dict[str, float] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """The adopted aggregate, the sites in it and (after clipping) the weight each one had;
        `details` adds how it was combined (secure aggregation) and its client-level DP."""
        finite = {k: v for k, v in metrics.items() if v == v and abs(v) != float("inf")}
        payload: dict[str, Any] = {
            "round": server_round,
            "sites": sorted(sites),
            "aggregate_digest": aggregate_digest,
            "metrics": finite,
        }
        if weights is not None:
            payload["weights"] = {site: float(w) for site, w in sorted(weights.items())}
        payload.update(details or {})
        self._pending.append((records.ROUND_AGGREGATED, payload))
        self.flush()

    def sign_head(self) -> None:
        """Sign the chain head and refresh the witness: truncation after this is detectable."""
        self.flush()
        self.ledger.sign_head(
            self.coordinator.private, public_pem=self.coordinator.public, witness_path=self.witness
        )
