"""Throughput of sealing + signing updates, and of ledger appends and full verification."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from fedsafe.simulations.bench.rows import Row, summarize
from fedsafe.simulations.bench.timing import interleave

__all__ = ["run", "seal_sign_rows", "ledger_rows"]


def seal_sign_rows(*, repeats: int, sizes_mb: tuple[int, ...] = (1, 10)) -> list[Row]:
    """MB/s of seal (X25519 + AES-256-GCM) + Ed25519 sign of the ciphertext, per update size."""
    from fedsafe.common import crypto

    _, sealing_public = crypto.generate_sealing_key()
    signing_private, _ = crypto.generate_signing_key()
    rows = []
    for mb in sizes_mb:
        payload = os.urandom(mb * 2**20)

        def seal_sign(data: bytes = payload) -> None:
            blob = crypto.seal(sealing_public, data, context=b"run|1|site")
            crypto.sign(signing_private, blob)

        def seal_only(data: bytes = payload) -> None:
            crypto.seal(sealing_public, data, context=b"run|1|site")

        samples = interleave({"seal+sign": seal_sign, "seal": seal_only}, repeats=repeats)
        for name, s in samples.items():
            rates = [mb / v for v in s]
            lo, med, n = summarize(rates)
            rows.append(
                Row(
                    "crypto_ledger",
                    f"{name} {mb} MB update",
                    "MB/s",
                    lo,
                    med,
                    n,
                    note="min/median of the rate (min = slowest repeat)",
                )
            )
    return rows


def _append_rates(ledger: object, *, singles: int, batches: int) -> tuple[float, float]:
    from fedsafe.common.ledger import records

    payload = {"site": "s", "round": 1, "decision": "granted", "reason": "ok"}
    start = time.perf_counter()
    for _ in range(singles):
        ledger.append(records.CONSENT_DECISION, payload)  # type: ignore[attr-defined]
    single = singles / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(batches):
        ledger.append_many([(records.CONSENT_DECISION, payload)] * 100)  # type: ignore[attr-defined]
    many = batches * 100 / (time.perf_counter() - start)
    return single, many


def ledger_rows(*, repeats: int, verify_entries: int) -> list[Row]:
    """Append rates (one transaction per entry; append_many of 100) and full-verify rate."""
    from fedsafe.common.ledger import Ledger, records, verify_ledger

    rows = []
    with tempfile.TemporaryDirectory(prefix="fedsafe-ledger-") as tmp:
        ledger = Ledger.open(Path(tmp) / "append.sqlite")
        singles, manys = [], []
        for _ in range(repeats):
            s, m = _append_rates(ledger, singles=50, batches=5)
            singles.append(s)
            manys.append(m)
        ledger.close()
        lo, med, n = summarize(singles)
        rows.append(
            Row(
                "crypto_ledger",
                "ledger append, 1 entry per transaction",
                "entries/s",
                lo,
                med,
                n,
                note="SQLite WAL, synchronous=FULL: one fsync per append",
            )
        )
        lo, med, n = summarize(manys)
        rows.append(
            Row(
                "crypto_ledger",
                "ledger append_many, 100 per transaction",
                "entries/s",
                lo,
                med,
                n,
                baseline="1 per transaction",
                ratio_min=lo / min(singles),
                ratio_median=med / sorted(singles)[n // 2],
            )
        )
        if verify_entries:
            big = Ledger.open(Path(tmp) / "verify.sqlite")
            payload = {"site": "s", "round": 1, "decision": "granted", "reason": "ok"}
            fill = time.perf_counter()
            for _ in range(verify_entries // 1000):
                big.append_many([(records.CONSENT_DECISION, payload)] * 1000)
            fill = time.perf_counter() - fill
            rates = []
            for _ in range(2):
                start = time.perf_counter()
                result = verify_ledger(big, require_signed_tail=False)  # chain speed only
                rates.append(result.entries_checked / (time.perf_counter() - start))
            big.close()
            lo, med, n = summarize(rates)
            rows.append(
                Row(
                    "crypto_ledger",
                    f"full verify, {verify_entries:,} entries",
                    "entries/s",
                    lo,
                    med,
                    n,
                    note=f"{verify_entries / med:.1f} s per verify; filled "
                    f"in {fill:.1f} s with append_many of 1,000",
                )
            )
    return rows


def run(*, quick: bool = False) -> list[Row]:
    """Seal+sign at 1 and 10 MB; ledger appends; verify of 100k entries (skipped when quick)."""
    rows = seal_sign_rows(repeats=3 if quick else 7)
    rows.extend(ledger_rows(repeats=2 if quick else 5, verify_entries=0 if quick else 100_000))
    return rows
