"""A site's own answers to its noise searches, kept beside its budget store and signed with its key.

The search for the noise that meets a target epsilon costs an accountant pass on the RDP bound
curve per step and one full pass to confirm (5-6 full passes before; 0.1-1.4 s on 2 cores).
Every process that serves the site asks the same question again: each simulation worker the
site lands on, each restart of a deployed site. An answer is kept only under the site's own
Ed25519 signature and used only where that signature verifies with the public key derived
from the site's private key (never a key found beside the file): whoever can write the file
but not the key cannot make the site train with less noise than its own search gave. An
answer that does not verify is not used; the site searches again and says so in its log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import stat
from dataclasses import asdict
from functools import cache
from importlib import metadata
from pathlib import Path

from fedsafe.common import crypto
from fedsafe.common.config import PrivacyConfig, TrainingConfig
from fedsafe.common.errors import IntegrityError
from fedsafe.common.privacy.accountants import NOISE_SEARCH_REVISION
from fedsafe.common.privacy.planner import (
    NoiseQuestion,
    SitePlan,
    noise_question,
    plan_site,
    plan_with,
)
from fedsafe.common.storage import write_atomic

__all__ = ["PLAN_STATEMENT", "PlanCache", "site_plan"]

log = logging.getLogger(__name__)

PLAN_STATEMENT = "fedsafe-noise-plan-v1"
FILE_NAME = "noise-plans.json"
MAX_ENTRIES = 64  # a site keeps its latest answers; an older question is searched again
MAX_FILE_BYTES = 1 << 20  # 64 entries take about 60 KiB; a larger file was not written by us


@cache
def _accountant_version() -> str:
    """The accountant's code is part of the question: an upgrade of Opacus, or a change to
    fedsafe's own search (NOISE_SEARCH_REVISION), asks afresh."""
    return metadata.version("opacus")


def _key(question: NoiseQuestion) -> str:
    text = json.dumps(
        {**asdict(question), "opacus": _accountant_version(), "search": NOISE_SEARCH_REVISION},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class PlanCache:
    """The signed answers in `folder`/noise-plans.json, read and written with the site's key.

    Callers hold the site's round lock, so read, update and replace are one at a time.
    """

    def __init__(self, folder: Path, private_key: bytes) -> None:
        self.path = Path(folder) / FILE_NAME
        self._private = private_key
        self._public = crypto.public_key_of(private_key)

    @property
    def public_key(self) -> bytes:
        """The key the cache's answers verify with (derived from the site's private key)."""
        return self._public

    def _read(self) -> str | None:
        """The file's text, or None if absent; only a regular file, never a link or a FIFO
        (whoever plants one must not make the site hang or read elsewhere), and bounded."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ValueError("not a regular file")
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
        return data.decode("utf-8")

    def _entries(self) -> dict[str, dict[str, object]]:
        try:
            text = self._read()
            if text is None:
                return {}
            record = json.loads(text)
            entries = record["entries"]
            if record.get("format") != PLAN_STATEMENT or not isinstance(entries, dict):
                raise ValueError("not a noise plan file")
            return entries
        except (OSError, ValueError, KeyError, TypeError, RecursionError, MemoryError) as err:
            log.warning(
                "noise plan cache %s is unreadable (%s); the site searches again",
                self.path,
                type(err).__name__,
            )
            return {}

    def get(self, question: NoiseQuestion) -> tuple[float, float] | None:
        """The (noise, epsilon) signed for `question`, or None (absent or not verified)."""
        key = _key(question)
        entry = self._entries().get(key)
        if entry is None:
            return None
        try:
            text = str(entry["payload"])
            crypto.verify(self._public, text.encode(), bytes.fromhex(str(entry["signature"])))
            payload = json.loads(text)
            if payload["statement"] != PLAN_STATEMENT or payload["key"] != key:
                raise IntegrityError("signed for another question")
            if payload["question"] != asdict(question):
                raise IntegrityError("signed for another question")
            sigma, eps = float(payload["noise_multiplier"]), float(payload["epsilon"])
            if not (math.isfinite(sigma) and sigma > 0 and 0 < eps <= question.target_epsilon):
                raise IntegrityError("the answer does not meet its own question")
        except (KeyError, TypeError, ValueError, RecursionError, IntegrityError):
            log.warning(
                "noise plan cache %s: the answer for this question does not verify with the "
                "site's key (edited or planted); the site searches again",
                self.path,
            )
            return None
        return sigma, eps

    def put(self, question: NoiseQuestion, answer: tuple[float, float]) -> None:
        """Sign and keep `answer` for `question` (the file replaced atomically, mode 0600)."""
        key = _key(question)
        payload = {
            "statement": PLAN_STATEMENT,
            "key": key,
            "question": asdict(question),
            "noise_multiplier": float(answer[0]),
            "epsilon": float(answer[1]),
        }
        text = _canonical(payload)
        entries = {k: v for k, v in self._entries().items() if k != key}
        entries[key] = {
            "payload": text,
            "signature": crypto.sign(self._private, text.encode()).hex(),
        }
        kept = dict(list(entries.items())[-MAX_ENTRIES:])
        body = _canonical({"format": PLAN_STATEMENT, "entries": kept})
        try:
            write_atomic(self.path, body, sync_folder=False)  # a lost answer is searched again
        except OSError as err:  # a full or read-only disk costs the next process a search
            log.warning("noise plan cache %s not written (%s)", self.path, err)


def site_plan(
    privacy: PrivacyConfig,
    training: TrainingConfig,
    *,
    n_train: int,
    rounds: int | None,
    cache: PlanCache,
) -> SitePlan:
    """`plan_site`, the noise search's answer kept in (and taken from) the site's signed cache."""
    question = noise_question(privacy, training, n_train=n_train, rounds=rounds)
    if question is None:  # the noise is given: nothing to search
        return plan_site(privacy, training, n_train=n_train, rounds=rounds)
    searched, verified = (SEARCHED, question), (cache.public_key, question)
    answer = _known.get(searched) or _known.get(verified)
    if answer is None and (answer := cache.get(question)) is not None:
        _remember(verified, answer)
    if answer is None:
        plan = plan_site(privacy, training, n_train=n_train, rounds=rounds)
        answer = (plan.noise_multiplier, plan.planned_epsilon)
        cache.put(question, answer)
        _remember(searched, answer)
    return plan_with(privacy, training, n_train=n_train, rounds=rounds, answer=answer)


def _remember(key: tuple[bytes, NoiseQuestion], answer: tuple[float, float]) -> None:
    if len(_known) >= MAX_ENTRIES:
        _known.clear()
    _known[key] = answer


# This process's memory, never read from a file. What it searched itself is the answer to the
# question for every site it serves (SEARCHED); what it verified in a site's file holds only
# for the key that signed it: one site's key, stolen or misused, must not set another's noise.
SEARCHED = b""
_known: dict[tuple[bytes, NoiseQuestion], tuple[float, float]] = {}
