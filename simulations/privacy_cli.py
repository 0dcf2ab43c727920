"""`fedsafe privacy epsilon|noise`: the accountant on the command line for site admins."""

from __future__ import annotations

import argparse
import json
import math

from common.privacy import ACCOUNTANTS, epsilon_for, noise_for_target

__all__ = ["add_privacy_parser"]


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


def _epsilon(args: argparse.Namespace) -> int:
    eps = epsilon_for(
        [(args.noise_multiplier, args.sample_rate, args.steps)], delta=args.delta, accountant=args.accountant
    )
    out = {"epsilon": _json_number(eps), "delta": args.delta, "accountant": args.accountant}
    print(json.dumps(out) if args.json else f"epsilon = {eps:.4f} at delta = {args.delta:g} ({args.accountant})")
    return 0


def _noise(args: argparse.Namespace) -> int:
    sigma, eps = noise_for_target(
        target_epsilon=args.target_epsilon,
        sample_rate=args.sample_rate,
        steps=args.steps,
        delta=args.delta,
        accountant=args.accountant,
    )
    out = {"noise_multiplier": sigma, "epsilon": eps, "delta": args.delta, "accountant": args.accountant}
    print(
        json.dumps(out)
        if args.json
        else f"noise multiplier {sigma:.4f} reaches epsilon = {eps:.4f} <= {args.target_epsilon:g} at delta = {args.delta:g}"
    )
    return 0


def add_privacy_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    privacy = sub.add_parser("privacy", help="privacy accounting for planning a site's spend")
    psub = privacy.add_subparsers(dest="privacy_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--sample-rate", type=float, required=True, help="Poisson sampling rate q")
        p.add_argument("--steps", type=int, required=True, help="DP-SGD steps")
        p.add_argument("--delta", type=float, required=True)
        p.add_argument("--accountant", choices=sorted(ACCOUNTANTS), default="rdp")
        p.add_argument("--json", action="store_true", help="print JSON")

    eps = psub.add_parser("epsilon", help="epsilon spent by a noise multiplier over steps")
    eps.add_argument("--noise-multiplier", type=float, required=True)
    common(eps)
    eps.set_defaults(func=_epsilon)

    noise = psub.add_parser("noise", help="noise multiplier that stays within a target epsilon")
    noise.add_argument("--target-epsilon", type=float, required=True)
    common(noise)
    noise.set_defaults(func=_noise)
