"""How a run enters and leaves the ledger: its keys and registry, its first entry, the
entry that resumes it, and the final model whose digest closes it."""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord
from safetensors.torch import save_file

from fedsafe.common import crypto
from fedsafe.common.config import ExperimentConfig
from fedsafe.common.layout import coordinator_keys_dir, federation_sites, simulated_site_dir
from fedsafe.common.ledger import Ledger, records
from fedsafe.server.checkpoint import Checkpoint
from fedsafe.server.compliance import Compliance, CoordinatorKeys
from fedsafe.server.consent import ConsentRegistry
from fedsafe.server.provenance import code_version, config_hash
from fedsafe.server.resume_config import bound_config, bound_config_hash

__all__ = [
    "MODEL_FILE",
    "final_model",
    "open_compliance",
    "run_resumed",
    "run_started",
    "save_model",
]

log = logging.getLogger("fedsafe.server")


MODEL_FILE = "model.safetensors"


def save_model(state: dict[str, torch.Tensor], path: Path) -> str:
    """Save the model as safetensors (an auditor loads it without running code: names, dtypes
    and shapes are in its JSON header) and return the SHA-256 of the file the ledger quotes."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(tensors, str(path), metadata={"format": "fedsafe-model-v1"})
    return hashlib.sha256(path.read_bytes()).hexdigest()


def open_compliance(cfg: ExperimentConfig, run_dir: Path) -> Compliance:
    """The run's ledger, consent registry and keys, from config or the simulation layout."""
    c = cfg.compliance
    run_id = run_dir.name
    server_keys = coordinator_keys_dir(cfg)
    site_keys = Path(c.site_keys_dir) if c.site_keys_dir else run_dir / "keys" / "sites"
    coordinator = CoordinatorKeys.load_or_create(server_keys, site_keys)
    published = run_dir / "keys" / "server_signing.pub"
    published.parent.mkdir(parents=True, exist_ok=True)
    published.write_bytes(coordinator.public)
    if c.site_keys_dir is not None:  # deployment: publish the enrolled keys beside the ledger
        (run_dir / "keys" / "sites").mkdir(exist_ok=True)
        for pub in Path(c.site_keys_dir).glob("*.pub"):
            shutil.copyfile(pub, run_dir / "keys" / "sites" / pub.name)
    simulated = {}
    if c.site_keys_dir is None:  # a simulation: each simulated site's key sits in its own folder
        simulated = {s: simulated_site_dir(cfg, s, run_id) / "keys" for s in federation_sites(cfg)}
    registry = ConsentRegistry.open(c.consent_registry or run_dir / "consent.sqlite")
    try:
        ledger = Ledger.open(run_dir / "ledger.sqlite")
    except Exception:
        registry.close()  # a refused ledger leaves no registry connection open
        raise
    return Compliance(
        run_id=run_id,
        purpose=c.purpose,
        dataset=cfg.dataset.name,
        jurisdictions=c.jurisdictions or None,
        ledger=ledger,
        witness=run_dir / "ledger.witness.json",
        coordinator=coordinator,
        consent=registry,
        simulated_key_dirs=simulated,
        privacy=cfg.privacy,
        require_counts=cfg.security.secure_aggregation,
    )


def run_started(cfg: ExperimentConfig, compliance: Compliance) -> None:
    """The ledger's first entry: who takes part, under which code, config and privacy unit."""
    participants = {}
    for site in sorted(compliance.roster.values()):
        public = compliance.site_key(site)
        participants[site] = crypto.public_key_fingerprint(public) if public else None
    compliance.ledger.append(
        records.RUN_STARTED,
        {
            "ledger_format": records.LEDGER_FORMAT,
            "run_id": compliance.run_id,
            "purpose": compliance.purpose,
            "jurisdictions": list(cfg.compliance.jurisdictions),
            "code_version": code_version(),
            "config_hash": config_hash(cfg),
            "bound_config_hash": bound_config_hash(bound_config(cfg)),
            "dataset": cfg.dataset.name,
            "model": cfg.model.name,
            "strategy": cfg.strategy.name,
            "rounds": cfg.training.rounds,
            "privacy": asdict(cfg.privacy),
            "secure_aggregation": cfg.security.secure_aggregation,
            "sealed_updates": cfg.security.sealed_updates,
            "participants": participants,
            "server_key": crypto.public_key_fingerprint(compliance.coordinator.public),
        },
    )


def run_resumed(
    compliance: Compliance, checkpoint: Checkpoint, bound: dict[str, Any], *, skip: int
) -> None:
    """The ledger says where the run continues and under which (unchanged) settings."""
    payload: dict[str, Any] = {
        "run_id": compliance.run_id,
        "from_round": checkpoint.round + 1 + skip,
        "checkpoint_head": list(checkpoint.ledger_head),
        "config_hash": bound_config_hash(bound),
    }
    if skip:
        payload["abandoned_round"] = checkpoint.round + 1
    compliance.ledger.append(records.RUN_RESUMED, payload)
    log.warning("resuming run %s after round %d", compliance.run_id, checkpoint.round)


def final_model(
    run_dir: Path, final: ArrayRecord, compliance: Compliance, *, rounds: int
) -> tuple[Path, str]:
    """Write the final model (safetensors), record its digest in the ledger and sign the head."""
    path = run_dir / MODEL_FILE
    sha = save_model(final.to_torch_state_dict(), path)
    compliance.ledger.append(
        records.RUN_FINISHED,
        {"run_id": compliance.run_id, "rounds_completed": rounds, "final_model_sha256": sha},
    )
    compliance.sign_head()
    log.info("final model %s sha256 %s", path, sha)
    return path, sha
