"""`fedsafe audit privacy RUN_CONFIG`: the one-run canary audit from the command line.

RUN_CONFIG is a run folder (its `config.json`, exactly what the run trained with), a config
JSON file, or Hydra overrides composed on the embedded defaults (`federation=hospitals
privacy=eps1`). The JSON is read as data and validated like any config; nothing in it runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedsafe.common.config import ExperimentConfig, from_dict
from fedsafe.common.errors import ConfigError

__all__ = ["add_privacy_audit_parser", "audit_config"]


def _from_json(path: Path) -> ExperimentConfig:
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError("RUN_CONFIG", str(path), "a run folder with config.json, or a JSON file")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError("RUN_CONFIG", str(file), f"readable JSON ({err})") from None
    return from_dict(ExperimentConfig, data, source=str(file))


def _from_overrides(overrides: list[str]) -> ExperimentConfig:
    from hydra import compose, initialize_config_module

    from fedsafe.simulations.hydra_config import config_from_hydra

    with initialize_config_module(config_module="fedsafe.conf", version_base="1.3"):
        composed = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    return config_from_hydra(composed)


def audit_config(run_config: list[str]) -> ExperimentConfig:
    """The config RUN_CONFIG names: one existing path, or Hydra overrides (`key=value`)."""
    if len(run_config) == 1 and "=" not in run_config[0]:
        return _from_json(Path(run_config[0]))
    not_overrides = [item for item in run_config if "=" not in item]
    if not_overrides:
        raise ConfigError(
            "RUN_CONFIG", " ".join(not_overrides), "one run folder or JSON file, or key=value"
        )
    return _from_overrides(run_config)


def _audit(args: argparse.Namespace) -> int:
    from fedsafe.simulations.privacy_audit import format_audit, run_privacy_audit

    cfg = audit_config(args.run_config)
    result = run_privacy_audit(
        cfg,
        Path(args.out),
        site_name=args.site,
        canaries=args.canaries,
        confidence=args.confidence,
        scale=args.canary_scale,
    )
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "config"}))
    else:
        print(format_audit(result))
        print(f"audit: {Path(args.out) / result['run_id'] / 'audit.json'}")
    return 1 if result["epsilon_lower_bound"] > result["claimed_epsilon"] else 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.5 <= value < 1:
        raise argparse.ArgumentTypeError(f"confidence must be in [0.5, 1), got {text}")
    return value


def add_privacy_audit_parser(asub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`fedsafe audit privacy`: mounted beside `audit verify|export`."""
    privacy = asub.add_parser(
        "privacy",
        help="empirical lower bound on a site's epsilon from one run with canaries",
        description=(
            "Trains one site through its real round path with random canaries, each included "
            "with probability 1/2, and turns the membership guesses into a lower bound on "
            "epsilon (Steinke, Nasr, Jagielski 2023). Exit 0: the bound is at most the "
            "accountant's epsilon. Exit 1: the bound exceeds it (the claim is contradicted)."
        ),
    )
    privacy.add_argument(
        "run_config", nargs="+", help="a run folder, a config JSON, or Hydra overrides"
    )
    privacy.add_argument("--site", help="the site to audit (default: the federation's first)")
    privacy.add_argument("--canaries", type=int, default=512, help="m canaries (default 512)")
    privacy.add_argument("--confidence", type=_fraction, default=0.95)
    privacy.add_argument(
        "--canary-scale", type=float, default=3.0, help="canary inputs' sd, in the rows' sd"
    )
    privacy.add_argument("--out", default="runs/audits", help="folder for the audit's run")
    privacy.add_argument("--json", action="store_true")
    privacy.set_defaults(func=_audit)
