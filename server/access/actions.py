"""What an authorised operator may do on the coordinator: submit, consent, read reports."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsafe.common.consent import SignedConsent, withdrawal_from_dict
from fedsafe.common.crypto.pki import load_signing_public_key
from fedsafe.common.errors import ConsentError
from fedsafe.common.ledger.audit import Anchors
from fedsafe.common.report import ReportError, build_run_report
from fedsafe.server.access.errors import AccessError
from fedsafe.server.consent.cli import entry_to_dict
from fedsafe.server.consent.registry import ConsentRegistry

__all__ = ["CoordinatorActions", "SubmitFunction", "check_name"]

# (resume, run_id) -> (run id, FAB sha256): what `fedsafe server submit` does locally.
SubmitFunction = Callable[[bool, str | None], tuple[int | str, str]]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(value: object, what: str) -> str:
    """A run id or site name that can be a file name and nothing else (no '..', no '/')."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} must match {_NAME.pattern} without '..', got {value!r}")
    return value


def _mapping(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key)
    if not isinstance(value, Mapping):
        raise ValueError(f"request field '{key}' must be an object")
    return value


@dataclass(frozen=True)
class CoordinatorActions:
    """The coordinator's state the endpoint acts on; each method takes the parsed request.

    Consent is checked against the site's enrolled signing key (``site_keys_dir/<site>.pub``),
    never a key the request carries: the operator delivers a site's signature, it cannot
    stand in for it.
    """

    runs_dir: Path
    consent_registry: str | None
    site_keys_dir: Path
    server_signing_pub: Path | None = None
    submit: SubmitFunction | None = None

    def submit_run(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Submit the run configured in server.yaml (optionally resuming one)."""
        if self.submit is None:
            raise AccessError("this admin endpoint has no SuperLink to submit to")
        resume = body.get("resume", False)
        run_id = body.get("run_id")
        if not isinstance(resume, bool):
            raise ValueError("request field 'resume' must be true or false")
        if run_id is not None:
            check_name(run_id, "run_id")
        submitted, digest = self.submit(resume, run_id)
        return {"run_id": str(submitted), "fab_sha256": digest}

    def _site_key(self, site: str) -> bytes:
        path = self.site_keys_dir / f"{check_name(site, 'site')}.pub"
        if not path.is_file():
            raise ConsentError(
                f"site '{site}' has no enrolled signing key ({path}); enrol it first: "
                f"fedsafe server enroll --name {site} --signing-pub signing.pub"
            )
        return load_signing_public_key(path)

    def _registry(self, *, create: bool) -> ConsentRegistry:
        if not self.consent_registry:
            raise ConsentError("this coordinator keeps no consent registry")
        return ConsentRegistry.open(self.consent_registry, create=create)

    def consent_grant(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store a site-signed grant after checking it against the site's enrolled key."""
        signed = SignedConsent.from_dict(_mapping(body, "signed"))
        public_pem = self._site_key(signed.record.site)
        with self._registry(create=True) as registry:
            registry.grant(signed, public_pem)
        return {"granted": signed.record.record_id, "site": signed.record.site}

    def consent_withdraw(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store a site-signed withdrawal after checking it against the site's enrolled key."""
        withdrawal = withdrawal_from_dict(_mapping(body, "withdrawal"))
        public_pem = self._site_key(withdrawal.site)
        with self._registry(create=True) as registry:
            registry.withdraw(withdrawal, public_pem)
        return {"withdrawn": withdrawal.record_id, "site": withdrawal.site}

    def consent_list(self, site: str | None) -> dict[str, Any]:
        """Stored records (all, or one site's) as `fedsafe consent list --json` prints them."""
        if site is not None:
            check_name(site, "site")
        with self._registry(create=False) as registry:
            return {"records": [entry_to_dict(e) for e in registry.records(site)]}

    def runs_list(self) -> dict[str, Any]:
        """Run folder names under runs_dir (what `report_read` accepts)."""
        if not self.runs_dir.is_dir():
            return {"runs": []}
        return {"runs": sorted(p.name for p in self.runs_dir.iterdir() if p.is_dir())}

    def report_read(self, run_id: str) -> dict[str, Any]:
        """A run's report (JSON; the operator renders the HTML), its ledger checked against
        the coordinator's own signing key, not keys found in the run folder."""
        run_dir = self.runs_dir / check_name(run_id, "run id")
        if not run_dir.is_dir():
            raise ReportError(f"no run folder '{run_id}' on this coordinator")
        key = self.server_signing_pub
        anchors = Anchors(server_key=key) if key is not None and key.is_file() else None
        return {"run_id": run_id, "report": build_run_report(run_dir, anchors=anchors)}
