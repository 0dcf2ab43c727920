"""Build the admin endpoint from a coordinator's server.yaml: policy, CA, ledger, actions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fedsafe.common.crypto.pki import load_signing_private_key, load_signing_public_key
from fedsafe.server.access.actions import CoordinatorActions, SubmitFunction
from fedsafe.server.access.audit_log import AccessLog
from fedsafe.server.access.config import ACCESS_YAML_EXAMPLE, AccessConfig
from fedsafe.server.access.endpoint import AdminEndpoint, server_tls_context
from fedsafe.server.access.errors import AccessError
from fedsafe.server.access.service import AccessService
from fedsafe.server.deploy.config import ServerDeployConfig
from fedsafe.server.deploy.flower import submit_run
from fedsafe.server.deploy.resume import refuse_restart, resume_target, with_resume
from fedsafe.server.deploy.superlink import ensure_server_keys

__all__ = ["access_of", "build_service", "start_admin_endpoint", "flower_submit"]


def access_of(cfg: ServerDeployConfig) -> AccessConfig:
    """The ``access:`` section, or an AccessError saying how to add one."""
    access = cfg.access
    if access is None:
        raise AccessError(
            f"{cfg.path} has no access: section (admin endpoint address and roles); add one "
            f"like this (`fedsafe certs operator NAME` prints the fingerprints):\n"
            f"{ACCESS_YAML_EXAMPLE}"
        )
    return access


def flower_submit(cfg: ServerDeployConfig) -> SubmitFunction:
    """What `fedsafe server submit [--resume --run-id]` does, as the endpoint's submit action."""

    def submit(resume: bool, run_id: str | None) -> tuple[int | str, str]:
        if resume:
            return submit_run(with_resume(cfg, resume_target(cfg, run_id)))
        if run_id is not None:
            raise AccessError("run_id names the run to continue: send it with resume=true")
        refuse_restart(cfg)
        return submit_run(cfg)

    return submit


def build_service(
    cfg: ServerDeployConfig,
    *,
    submit: SubmitFunction | None,
    clock: Callable[[], datetime] | None = None,
) -> AccessService:
    """The access service over this coordinator's state; decisions are signed with the
    ServerApp's signing key, so `fedsafe audit verify WORKDIR/access --key
    server_signing.pub` checks them like a run ledger."""
    access = access_of(cfg)
    signing_pub, _ = ensure_server_keys(cfg)
    log = AccessLog(
        access.ledger_dir,
        signing_key_pem=load_signing_private_key(signing_pub.with_suffix(".key")),
        signing_pub_pem=load_signing_public_key(signing_pub),
        clock=clock,
    )
    registry = cfg.run_overrides.get("compliance.consent_registry")
    actions = CoordinatorActions(
        runs_dir=cfg.runs_dir,
        consent_registry=str(registry) if registry else None,
        site_keys_dir=cfg.site_keys_dir,
        server_signing_pub=signing_pub,
        submit=submit,
    )
    return AccessService(
        policy=access.policy,
        ca_pem=Path(access.ca_cert).read_bytes(),
        log=log,
        actions=actions,
        clock=clock,
    )


def start_admin_endpoint(
    cfg: ServerDeployConfig, *, submit: SubmitFunction | None
) -> AdminEndpoint | None:
    """Start the endpoint when server.yaml has ``access:``; None when it has not."""
    if cfg.access is None:
        return None
    access = access_of(cfg)
    service = build_service(cfg, submit=submit)
    context = server_tls_context(cert=access.cert, key=access.key, ca_cert=access.ca_cert)
    return AdminEndpoint(service, host=access.host, port=access.port, context=context).start()
