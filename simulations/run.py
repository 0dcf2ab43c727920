"""`fedsafe simulate [overrides]`: compose conf/ with Hydra, validate, simulate, print the table."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.errors import ConfigError, FedsafeError
from fedsafe.common.layout import coordinator_keys_dir, federation_sites
from fedsafe.common.ledger.audit import Anchors
from fedsafe.common.names import check_name
from fedsafe.server.checkpoint import checkpoint_to_resume
from fedsafe.simulations.engine import format_table, simulate
from fedsafe.simulations.hydra_config import SOURCE, config_from_hydra, plain, source_of
from fedsafe.simulations.report_cli import write_report

__all__ = ["main", "config_from_hydra"]

log = logging.getLogger("fedsafe")


def _run_folder(run_id: str | None, name: str, stamp: str, *, _root_: DictConfig) -> str:
    """The run folder's name: `run_id` when the user names the run (so it can be resumed),
    else name-time. Hydra resolves this before it creates the folder, so the whole config is
    validated here: a rejected config, or a name like `../x`, never leaves a folder behind."""
    try:
        check_name("run_id" if run_id else "name", run_id or name, source=SOURCE)
        data = {k: plain(_root_[k]) for k in _root_ if k != "hydra"}
        cfg = from_dict(ExperimentConfig, data, source=SOURCE)
        federation_sites(cfg)
        # A refused resume (finished, changed settings, planted checkpoint) must not touch the
        # existing run folder either: Hydra would rewrite its .hydra/ and run.log.
        public = coordinator_keys_dir(cfg) / "server_signing.pub"
        folder = Path(cfg.runs_dir) / (run_id or f"{name}-{stamp}")
        checkpoint_to_resume(cfg, folder, public.read_bytes() if public.is_file() else None)
    except ConfigError as err:  # SystemExit passes through Hydra's error wrapping
        named = ConfigError(
            err.key, err.value, err.allowed, source=source_of(err.key, _root_.hydra)
        )
        print(f"fedsafe: error: {named}", file=sys.stderr)
        raise SystemExit(2) from None
    except FedsafeError as err:
        print(f"fedsafe: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return run_id or f"{name}-{stamp}"


if not OmegaConf.has_resolver("run_folder"):
    OmegaConf.register_new_resolver("run_folder", _run_folder)


@hydra.main(config_path="pkg://fedsafe.conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Returns pooled held-out accuracy so sweeps can compare jobs."""
    try:
        experiment = config_from_hydra(cfg)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        summary = simulate(experiment, run_dir)
    except FedsafeError as err:
        log.error("%s", err)
        print(f"fedsafe: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_table(summary))
    # The coordinator checks its own run against its own key, which lives outside the folder.
    own_key = coordinator_keys_dir(experiment) / "server_signing.pub"
    report = write_report(run_dir, anchors=Anchors(server_key=own_key))
    print(f"run folder: {run_dir}")
    print(f"report:     {report}")
    return summary["global"].get("accuracy")
