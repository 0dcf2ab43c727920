"""`fedsafe server start|submit --resume`: continue a deployed run folder from its checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fedsafe.common.errors import ConfigError, FedsafeError
from fedsafe.common.names import check_name
from fedsafe.server.checkpoint import CHECKPOINT, Checkpoint, load_checkpoint
from fedsafe.server.deploy.config import ServerDeployConfig
from fedsafe.server.deploy.process import DeployError
from fedsafe.server.resume_config import bound_config, changed_keys

__all__ = ["ResumeTarget", "resume_target", "with_resume", "refuse_restart"]

_SUMMARY = "summary.json"  # written only when a run finished


@dataclasses.dataclass(frozen=True)
class ResumeTarget:
    """The run folder to continue and the last round its checkpoint holds."""

    run_id: str
    run_dir: Path
    round: int


def _unfinished(runs_dir: Path) -> list[Path]:
    """Run folders with a checkpoint and no summary, newest checkpoint last."""
    folders = [
        p.parent
        for p in runs_dir.glob(f"*/{CHECKPOINT}")
        if p.is_file() and not (p.parent / _SUMMARY).exists()
    ]
    return sorted(folders, key=lambda p: (p / CHECKPOINT).stat().st_mtime)


def _check_run_id(value: object, key: str) -> None:
    """A run id names a folder under runs_dir: `../x` must never reach the file system."""
    try:
        check_name(key, value)
    except ConfigError as err:
        raise DeployError(str(err)) from None


def _load(cfg: ServerDeployConfig, run_dir: Path) -> Checkpoint | None:
    """The run folder's checkpoint, verified with the coordinator's own key (not the folder's)."""
    if not (run_dir / CHECKPOINT).exists():
        return None
    public = cfg.server_keys_dir / "server_signing.pub"
    if not public.is_file():
        raise DeployError(
            f"cannot check {run_dir / CHECKPOINT}: the coordinator's key {public} is missing"
        )
    try:
        return load_checkpoint(run_dir, public.read_bytes())
    except FedsafeError as err:
        raise DeployError(str(err)) from None


def resume_target(cfg: ServerDeployConfig, run_id: str | None = None) -> ResumeTarget:
    """Which run to continue: `run_id` (--run-id), else run.config.run_id, else the newest
    unfinished run folder under runs_dir; a DeployError says why there is none."""
    named = run_id or cfg.run_overrides.get("run_id")
    if named:
        _check_run_id(named, "--run-id" if run_id else "run.config.run_id")
        run_dir = cfg.runs_dir / str(named)
        if not (run_dir / CHECKPOINT).is_file():
            raise DeployError(
                f"cannot resume run '{named}': {run_dir / CHECKPOINT} not found "
                "(no round of it completed; start it without --resume)"
            )
        if (run_dir / _SUMMARY).exists():
            raise DeployError(f"cannot resume run '{named}': it finished ({run_dir / _SUMMARY})")
    else:
        candidates = _unfinished(cfg.runs_dir)
        if not candidates:
            raise DeployError(
                f"nothing to resume: no run folder under {cfg.runs_dir} has a {CHECKPOINT} "
                f"without a {_SUMMARY}"
            )
        run_dir = candidates[-1]
    checkpoint = _load(cfg, run_dir)
    assert checkpoint is not None  # the file exists
    if checkpoint.finished:
        raise DeployError(
            f"cannot resume run '{run_dir.name}': it finished (its checkpoint says so)"
        )
    return ResumeTarget(run_dir.name, run_dir, checkpoint.round)


def with_resume(cfg: ServerDeployConfig, target: ResumeTarget) -> ServerDeployConfig:
    """The same coordinator config, submitting `run_id=<target>` and `resume=true`.

    A resume is the same run: any change to what the run computes, charges or records is
    refused here, naming the keys, before anything starts (the ServerApp checks again).
    """
    overrides = {**cfg.run_overrides, "run_id": target.run_id, "resume": True}
    resumed = dataclasses.replace(cfg, run_overrides=overrides)
    experiment = resumed.experiment()  # the ServerApp will accept it
    checkpoint = _load(cfg, target.run_dir)
    assert checkpoint is not None
    changed = changed_keys(checkpoint.config, bound_config(experiment))
    if changed:
        raise DeployError(
            f"cannot resume run '{target.run_id}': a resume is the same run, but these "
            f"settings differ from the run's: {', '.join(changed)}"
        )
    return resumed


def refuse_restart(cfg: ServerDeployConfig) -> None:
    """A named run (run.config.run_id) that already has rounds continues only with --resume.

    The ServerApp would refuse it too, but only inside Flower, after the SuperLink started.
    """
    named = cfg.run_overrides.get("run_id")
    if named:
        _check_run_id(named, "run.config.run_id")
    if named and not cfg.run_overrides.get("resume"):
        checkpoint = _load(cfg, cfg.runs_dir / str(named))
        if checkpoint is not None:
            raise DeployError(
                f"run '{named}' already completed {checkpoint.round} round(s) in "
                f"{cfg.runs_dir / str(named)}: continue it with --resume, or choose another "
                "run.config.run_id"
            )
