"""`fedsafe privacy epsilon|noise|plan`: the accountant and the planner for site admins."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

from fedsafe.common.config import MAX_CAP, MAX_DELTA, MAX_EPSILON, MAX_NOISE, MAX_ROUNDS
from fedsafe.common.errors import PrivacyError
from fedsafe.common.names import check_name
from fedsafe.common.privacy import ACCOUNTANTS, Charge, epsilon_for, noise_for_target
from fedsafe.common.privacy.plan_table import format_plan, plan_federation, plan_to_json

__all__ = ["add_privacy_parser"]


def _number(
    low: float, high: float, *, integer: bool = False, low_open: bool = True
) -> Callable[[str], float]:
    """An argparse type: a finite number in (low, high] (or [low, high]); inf and NaN refused
    here, because the accountant and the planner would otherwise search forever."""
    bracket = "(" if low_open else "["
    allowed = f"a finite {'integer' if integer else 'number'} in {bracket}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got {text!r}; allowed: {allowed}") from None
        above = value > low if low_open else value >= low
        if not (math.isfinite(value) and above and value <= high):
            raise argparse.ArgumentTypeError(f"got {text!r}; allowed: {allowed}")
        return value

    return parse


_NOISE = _number(0, MAX_NOISE)
_EPSILON = _number(0, MAX_EPSILON)
_DELTA = _number(0, MAX_DELTA)


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


def _epsilon(args: argparse.Namespace) -> int:
    eps = epsilon_for(
        [(args.noise_multiplier, args.sample_rate, args.steps)],
        delta=args.delta,
        accountant=args.accountant,
    )
    out = {"epsilon": _json_number(eps), "delta": args.delta, "accountant": args.accountant}
    print(
        json.dumps(out)
        if args.json
        else f"epsilon = {eps:.4f} at delta = {args.delta:g} ({args.accountant})"
    )
    return 0


def _noise(args: argparse.Namespace) -> int:
    sigma, eps = noise_for_target(
        target_epsilon=args.target_epsilon,
        sample_rate=args.sample_rate,
        steps=args.steps,
        delta=args.delta,
        accountant=args.accountant,
    )
    out = {
        "noise_multiplier": sigma,
        "epsilon": eps,
        "delta": args.delta,
        "accountant": args.accountant,
    }
    print(
        json.dumps(out)
        if args.json
        else f"noise multiplier {sigma:.4f} reaches epsilon = {eps:.4f} "
        f"<= {args.target_epsilon:g} at delta = {args.delta:g}"
    )
    return 0


def _pairs(values: list[str] | None, flag: str, cast: type) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise PrivacyError(f"{flag} expects NAME=VALUE, got {item!r}")
        check_name(flag, name)
        try:
            out[name] = cast(value)
        except ValueError:
            raise PrivacyError(
                f"{flag} {item!r}: {value!r} is not a valid {cast.__name__}"
            ) from None
        number = out[name]
        if cast in (int, float) and not (
            isinstance(number, int | float) and math.isfinite(number) and number > 0
        ):
            raise PrivacyError(f"{flag} {item!r}: {value!r} must be a finite number > 0")
        if cast is float and isinstance(number, float) and number > MAX_CAP:
            raise PrivacyError(f"{flag} {item!r}: at most {MAX_CAP:g}")
    return out


def _prior(stores: dict[str, object]) -> dict[str, list[Charge]]:
    """Each site's history from its own budget store (one data set per store)."""
    from fedsafe.client.budget import BudgetStore

    prior = {}
    for site, path in stores.items():
        with BudgetStore.open(Path(str(path)), create=False) as store:
            datasets = [d.dataset_id for d in store.datasets()]
            if len(datasets) > 1:
                raise PrivacyError(
                    f"store {path} holds several data sets {datasets}; plan them one at a time"
                )
            prior[site] = store.history(datasets[0]) if datasets else []
    return prior


def _plan(args: argparse.Namespace) -> int:
    sites = _pairs(args.site, "--site", int)
    if not sites:
        from fedsafe.common.config import DatasetConfig
        from fedsafe.common.data import load_sites

        sites = {s.site: s.n_train for s in load_sites(DatasetConfig())}
    caps = _pairs(args.cap, "--cap", float)
    if args.max_epsilon is not None:
        caps = {s: caps.get(s, args.max_epsilon) for s in sites}
    if args.target_epsilon is None and args.noise_multiplier is None:
        args.target_epsilon = 3.0
    plan = plan_federation(
        sites=sites,  # type: ignore[arg-type]
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        participation=args.participation,
        target_epsilon=args.target_epsilon,
        noise_multiplier=args.noise_multiplier,
        delta=args.delta,
        accountant=args.accountant,
        caps=caps or None,  # type: ignore[arg-type]
        prior_spend=_prior(_pairs(args.store, "--store", str)) or None,
    )
    if args.client_level is not None:
        from fedsafe.common.privacy.client_level import (
            CLIENT_LEVEL_ACCOUNTANT,
            plan_client_level,
        )

        no_goal = args.client_target_epsilon is None and args.client_noise_multiplier is None
        account = plan_client_level(
            mode=args.client_level,
            target_epsilon=8.0 if no_goal else args.client_target_epsilon,
            noise_multiplier=args.client_noise_multiplier,
            clipping_norm=args.client_clipping_norm,
            max_epsilon=args.client_max_epsilon,
            delta=args.delta,
            accountant=CLIENT_LEVEL_ACCOUNTANT,
            rounds=args.rounds,
        )
        plan = dataclasses.replace(plan, client_level=account)
    print(json.dumps(plan_to_json(plan), indent=2) if args.json else format_plan(plan))
    return 0


def _accounting_arguments(p: argparse.ArgumentParser) -> None:
    """What `epsilon` and `noise` both need: q, steps, delta, the accountant."""
    p.add_argument(
        "--sample-rate", type=_number(0, 1), required=True, help="Poisson sampling rate q"
    )
    p.add_argument("--steps", type=_number(1, 10**7, integer=True, low_open=False), required=True)
    p.add_argument("--delta", type=_DELTA, required=True)
    p.add_argument("--accountant", choices=sorted(ACCOUNTANTS), default="rdp")
    p.add_argument("--json", action="store_true", help="print JSON")


def _client_level_arguments(plan: argparse.ArgumentParser) -> None:
    client = plan.add_argument_group(
        "client-level DP", "one site's whole contribution per round (privacy.client_level)"
    )
    client.add_argument("--client-level", choices=("central", "distributed"))
    client_goal = client.add_mutually_exclusive_group()
    client_goal.add_argument(
        "--client-target-epsilon", type=_EPSILON, help="client-level target (default 8)"
    )
    client_goal.add_argument("--client-noise-multiplier", type=_NOISE)
    client.add_argument("--client-clipping-norm", type=_number(0, 1e4), default=0.5)
    client.add_argument("--client-max-epsilon", type=_number(0, MAX_CAP))


def add_privacy_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`fedsafe privacy epsilon | noise | plan`."""
    privacy = sub.add_parser("privacy", help="privacy accounting for planning a site's spend")
    psub = privacy.add_subparsers(dest="privacy_command", required=True)

    eps = psub.add_parser("epsilon", help="epsilon spent by a noise multiplier over steps")
    eps.add_argument(  # 0 is allowed here: the answer is then an infinite epsilon
        "--noise-multiplier", type=_number(0, MAX_NOISE, low_open=False), required=True
    )
    _accounting_arguments(eps)
    eps.set_defaults(func=_epsilon)

    noise = psub.add_parser("noise", help="noise multiplier that stays within a target epsilon")
    noise.add_argument("--target-epsilon", type=_EPSILON, required=True)
    _accounting_arguments(noise)
    noise.set_defaults(func=_noise)
    _add_plan_parser(psub)


def _add_plan_parser(psub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    plan = psub.add_parser(
        "plan",
        help="per site: noise for the target, epsilon after each round, the round a cap stops it",
        description="Without --site, plans the four UCI Heart Disease hospitals "
        "(their training sizes).",
    )
    plan.add_argument(
        "--site",
        action="append",
        metavar="NAME=N_TRAIN",
        help="a site and its training rows (repeat)",
    )
    plan.add_argument(
        "--rounds", type=_number(1, MAX_ROUNDS, integer=True, low_open=False), default=10
    )
    plan.add_argument(
        "--local-epochs", type=_number(1, 1000, integer=True, low_open=False), default=1
    )
    plan.add_argument(
        "--batch-size", type=_number(1, 10**6, integer=True, low_open=False), default=32
    )
    plan.add_argument(
        "--participation",
        type=_number(0, 1),
        default=1.0,
        help="expected fraction of rounds a site joins",
    )
    goal = plan.add_mutually_exclusive_group()
    goal.add_argument(
        "--target-epsilon", type=_EPSILON, help="this run's spend per site (default 3)"
    )
    goal.add_argument("--noise-multiplier", type=_NOISE)
    plan.add_argument("--delta", type=_DELTA, default=1e-5)
    plan.add_argument("--accountant", choices=sorted(ACCOUNTANTS), default="rdp")
    plan.add_argument(
        "--cap", action="append", metavar="NAME=EPS", help="a site's lifetime cap (repeat)"
    )
    plan.add_argument(
        "--max-epsilon", type=_number(0, MAX_CAP), help="the cap of every site without --cap"
    )
    plan.add_argument(
        "--store",
        action="append",
        metavar="NAME=PATH",
        help="a site's budget store: what it spent before",
    )
    _client_level_arguments(plan)
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=_plan, target_epsilon=None)
