"""Ledger storage: chaining, batching, streaming, durability across reopen and a real kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from _ledger_helpers import T0, fill

from fedsafe.common import crypto
from fedsafe.common.errors import IntegrityError, LedgerError
from fedsafe.common.ledger import (
    DROPOUT,
    ERROR,
    GENESIS_PREV_HASH,
    HEAD_SIGNED,
    RUN_STARTED,
    Ledger,
    entry_hash,
    head_message,
    verify_ledger,
)

REPO = Path(__file__).resolve().parents[4]


def test_empty_ledger_has_no_head(ledger: Ledger) -> None:
    assert ledger.head() is None
    assert len(ledger) == 0
    assert list(ledger.entries()) == []


def test_append_links_entries_into_a_chain(ledger: Ledger) -> None:
    # Arrange / Act
    first = ledger.append(RUN_STARTED, {"run_id": "r1"}, at_time=T0)
    second = ledger.append(ERROR, {"component": "x", "message": "y"}, at_time=T0)

    # Assert
    assert (first.seq, first.prev_hash) == (1, GENESIS_PREV_HASH)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert second.hash == entry_hash(2, second.time, ERROR, second.payload, first.hash)
    assert ledger.head() == second
    assert list(ledger.entries()) == [first, second]
    assert len(ledger) == 2


def test_append_unknown_kind_raises_and_writes_nothing(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="known kinds: run_started"):
        ledger.append("bogus", {})
    assert len(ledger) == 0


def test_append_nan_payload_raises_and_writes_nothing(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        ledger.append(ERROR, {"loss": float("nan")})
    assert len(ledger) == 0


def test_head_signed_cannot_be_appended_directly(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="sign_head"):
        ledger.append(HEAD_SIGNED, {"head_seq": 0})


def test_append_many_is_one_batch_of_consecutive_entries(ledger: Ledger) -> None:
    # Arrange
    ledger.append(RUN_STARTED, {"run_id": "r1"}, at_time=T0)
    items = [(DROPOUT, {"site": f"s{i}", "round": 1, "reason": "timeout"}) for i in range(3)]

    # Act
    batch = ledger.append_many(items, at_time=T0)

    # Assert
    assert [e.seq for e in batch] == [2, 3, 4]
    assert [e.prev_hash for e in batch[1:]] == [e.hash for e in batch[:-1]]
    assert list(ledger.entries(since_seq=1)) == batch
    assert ledger.append_many([]) == []


def test_append_many_with_a_bad_item_writes_nothing(ledger: Ledger) -> None:
    with pytest.raises(ValueError):
        ledger.append_many([(ERROR, {"m": 1}), (ERROR, {"m": float("inf")})])
    assert len(ledger) == 0


def test_entries_streams_across_pages_in_order(ledger: Ledger) -> None:
    # Arrange: more than one 2000-row page
    ledger.append_many([(ERROR, {"i": i}) for i in range(4500)], at_time=T0)

    # Act
    seqs = [e.seq for e in ledger.entries()]
    tail = [e.seq for e in ledger.entries(since_seq=4498)]

    # Assert
    assert seqs == list(range(1, 4501))
    assert tail == [4499, 4500]


def test_clock_is_injectable(ledger_url: str) -> None:
    with Ledger.open(ledger_url, clock=lambda: T0 + timedelta(seconds=1.5)) as ledger:
        entry = ledger.append(ERROR, {})
    assert entry.time == "2025-01-01T00:00:01.500000Z"


def test_plain_path_opens_sqlite_and_survives_reopen(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        written = fill(ledger, 5)

    # Act
    with Ledger.open(str(path)) as reopened:
        read = list(reopened.entries())
        more = reopened.append(ERROR, {"after": "reopen"})

    # Assert
    assert read == written
    assert more.prev_hash == written[-1].hash


def test_sign_head_appends_a_verifiable_signed_head(
    ledger: Ledger, server_keys: tuple[bytes, bytes], tmp_path: Path
) -> None:
    # Arrange
    private, public = server_keys
    head = fill(ledger, 3)[-1]

    # Act
    signed = ledger.sign_head(private, public_pem=public, witness_path=tmp_path / "w.json")

    # Assert
    assert signed.kind == HEAD_SIGNED and signed.seq == 4
    assert signed.payload["head_seq"] == 3 and signed.payload["head_hash"] == head.hash
    assert signed.payload["signer"] == crypto.public_key_fingerprint(public)
    crypto.verify(public, head_message(3, head.hash), bytes.fromhex(signed.payload["signature"]))
    assert (tmp_path / "w.json").is_file()


def test_sign_head_of_empty_ledger_raises(ledger: Ledger, server_keys: tuple[bytes, bytes]) -> None:
    with pytest.raises(LedgerError, match="empty"):
        ledger.sign_head(server_keys[0], public_pem=server_keys[1])


def test_sign_head_with_mismatched_key_pair_writes_nothing(
    ledger: Ledger, server_keys: tuple[bytes, bytes]
) -> None:
    # Arrange
    fill(ledger, 1)
    _, other_public = crypto.generate_signing_key()

    # Act / Assert
    with pytest.raises(IntegrityError):
        ledger.sign_head(server_keys[0], public_pem=other_public)
    assert len(ledger) == 1


def test_ledger_offers_no_update_or_delete() -> None:
    public = {name for name in dir(Ledger) if not name.startswith("_")}
    assert not {n for n in public if any(w in n for w in ("update", "delete", "remove", "edit"))}


def test_concurrent_writers_do_not_fork_the_chain(ledger_url: str) -> None:
    # Arrange: two independent handles (own engines), as two processes would have
    writers = [Ledger.open(ledger_url) for _ in range(2)]
    errors: list[BaseException] = []

    def work(ledger: Ledger, name: str) -> None:
        try:
            for i in range(40):
                ledger.append(ERROR, {"writer": name, "i": i})
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(w, str(n))) for n, w in enumerate(writers)]

    # Act
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # Assert
    assert errors == []
    result = verify_ledger(writers[0], require_signed_tail=False)  # chain only
    assert result.entries_checked == result.last_seq == 80
    for writer in writers:
        writer.close()


_CHILD = """
import sys
from fedsafe.common.ledger import Ledger
ledger = Ledger.open(sys.argv[1])
i = 0
while True:
    entry = ledger.append("error", {"component": "child", "message": "tick", "i": i})
    print(entry.seq, flush=True)
    i += 1
"""


@pytest.mark.slow
def test_committed_entries_survive_kill_9(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "killed.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, env=env, text=True
    )
    reported = 0
    deadline = time.monotonic() + 20
    try:
        assert child.stdout is not None
        while reported < 20 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            reported = int(line)
    finally:
        # Act
        child.send_signal(signal.SIGKILL)
        remaining, _ = child.communicate(timeout=10)
    for line in remaining.split():
        reported = max(reported, int(line))

    # Assert
    assert reported >= 20, "child did not commit 20 entries within 20 s"
    with Ledger.open(path) as ledger:
        result = verify_ledger(ledger, require_signed_tail=False)  # killed before a head
        assert len(ledger) >= reported
        assert result.last_seq == len(ledger)
