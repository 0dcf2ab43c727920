"""Benchmarks: DP step cost, round overhead, crypto/ledger throughput, scale, fixed cost,
deployed rounds, the aggregation modes and compact (8-bit) updates."""

from __future__ import annotations

__all__ = ["BENCHES", "FULL_ONLY"]

# Bench names in the order they run; each lives in its own module with a `run(quick=...)`.
BENCHES: tuple[str, ...] = (
    "dp_step",
    "round_overhead",
    "crypto_ledger",
    "scale",
    "fixed_cost",
    "deploy",  # deployed rounds, stock SuperNode vs the site worker (deploy_rounds.py)
    "aggregation_modes",  # secure vs sealed round at 10 sites; utility per DP mode
    "update_bits",  # bytes per update at 32 vs 8 bits, and the accuracy 8 bits cost
)

# Left out of `--quick` unless named in `--only`: deployed rounds wait on Flower's 3 s polls
# (about 4.5 min for both modes), which alone would double the quick run.
FULL_ONLY: frozenset[str] = frozenset({"deploy"})
