"""What a site checks in each SecAgg+ stage before it answers (the coordinator sends every stage).

Flower's SecAgg+ protects an update against a coordinator that follows the protocol. These
checks take away the cheap deviations a hostile one could try with what it controls:

- setup: fewer than 3 sites, or a threshold that is not a strict majority, is refused (with a
  minority threshold two disjoint majorities could each be told a different story);
- share keys: every neighbour's two public keys must be distinct from everyone else's;
- collect: the site masks only if it received a ciphertext from *every* neighbour it shared
  keys with (withholding one would let the coordinator later call that neighbour dropped and
  strip the pairwise mask), and every ciphertext must decrypt and name its sender and this
  site; all of it is checked before training, so a bad ciphertext costs the site nothing;
- unmask: alive and dropped sets must be disjoint neighbours, and a sum of fewer than
  max(threshold, 3) inputs is never unmasked (with two, one input reveals the other).

*Not* covered (README threat model): the node ids and SecAgg+ keys are not authenticated site
to site, so a coordinator that substitutes keys or shows different sites different views can
still target one site; that needs the malicious-server variant of the protocol.
"""

from __future__ import annotations

from typing import cast

from flwr.app import Context, Message
from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.secure_aggregation.secaggplus_utils import share_keys_plaintext_separate
from flwr.compat.common import recorddict_compat as compat

from fedsafe.common.secagg import PRG_KEY, PRG_NAME, UnmaskRefusedError, check_unmask_request

__all__ = ["MIN_SUM", "check_stage", "state_of"]

MIN_SUM = 3  # the fewest inputs a sum may be unmasked over


def state_of(ctxt: Context) -> SecAggPlusState:
    """The site's SecAgg+ state as Flower's mod saved it."""
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE

    record = ctxt.state.config_records.get(RECORD_KEY_STATE)
    return SecAggPlusState(**(dict(record) if record is not None else {}))


def _refuse(stage: str, message: str) -> UnmaskRefusedError:
    return UnmaskRefusedError(f"secure aggregation ({stage} stage): {message}")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _check_setup(msg: Message) -> None:
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    shares, threshold = _int(configs.get(Key.SHARE_NUMBER)), _int(configs.get(Key.THRESHOLD))
    if shares is None or threshold is None:
        raise _refuse("setup", "share number and threshold must be integers")
    if shares < MIN_SUM or 2 * threshold <= shares:
        raise _refuse(
            "setup",
            f"threshold {threshold} of {shares} sites; expected at least {MIN_SUM} sites and a "
            "strict majority threshold",
        )


def _check_share_keys(msg: Message) -> None:
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    keys: list[bytes] = []
    for name, value in configs.items():
        if name == Key.STAGE:
            continue
        if not isinstance(value, list) or len(value) != 2:
            raise _refuse("share_keys", f"neighbour {name!r} must carry two public keys")
        keys.extend(cast(list[bytes], value))
    if len(set(keys)) != len(keys):
        raise _refuse("share_keys", "two neighbours announced the same public key")


def _check_collect(msg: Message, ctxt: Context) -> None:
    config = compat.recorddict_to_fitins(msg.content, keep_input=True).config
    if config.get(PRG_KEY) != PRG_NAME:
        raise UnmaskRefusedError(
            f"secure aggregation: the server did not declare the {PRG_NAME} mask generator "
            f"(fit config {PRG_KEY}={config.get(PRG_KEY)!r}); its masks would not cancel ours. "
            "Run the coordinator with fedsafe's ServerApp"
        )
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    state = state_of(ctxt)
    sources = configs.get(Key.SOURCE_LIST)
    ciphertexts = configs.get(Key.CIPHERTEXT_LIST)
    if not isinstance(sources, list) or not isinstance(ciphertexts, list):
        raise _refuse("collect_masked_vectors", "sources and ciphertexts must be lists")
    neighbours = set(state.public_keys_dict) - {state.nid}
    if len(sources) != len(ciphertexts) or set(sources) != neighbours:
        missing = sorted(neighbours - set(sources))
        raise _refuse(
            "collect_masked_vectors",
            f"no key share forwarded from neighbour(s) {missing}; a site masks only with "
            "every neighbour it exchanged keys with",
        )
    for src, ciphertext in zip(sources, ciphertexts, strict=True):
        try:
            plain = decrypt(state.ss2_dict[cast(int, src)], cast(bytes, ciphertext))
            actual_src, dst, _, _ = share_keys_plaintext_separate(plain)
        except Exception:  # noqa: BLE001 - whatever is wrong with it, it is node src's share
            raise _refuse(
                "collect_masked_vectors", f"the key share from node {src} does not decrypt"
            ) from None
        if actual_src != src or dst != state.nid:
            raise _refuse(
                "collect_masked_vectors", f"the key share from node {src} names other nodes"
            )


def _check_unmask(msg: Message, ctxt: Context) -> None:
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    active, dead = configs.get(Key.ACTIVE_NODE_ID_LIST), configs.get(Key.DEAD_NODE_ID_LIST)
    if not isinstance(active, list) or not isinstance(dead, list):
        raise _refuse("unmask", "alive and dropped node lists are required")
    state = state_of(ctxt)
    floor = max(state.threshold, MIN_SUM)
    if len(active) < floor:
        raise _refuse(
            "unmask",
            f"{len(active)} alive node(s), fewer than {floor} (the threshold {state.threshold}, "
            f"and never under {MIN_SUM}); a sum of so few inputs hides too little",
        )
    check_unmask_request(
        node_id=msg.metadata.dst_node_id,
        neighbours=state.public_keys_dict.keys(),
        active=cast(list[int], active),
        dead=cast(list[int], dead),
    )


def check_stage(stage: str, msg: Message, ctxt: Context) -> None:
    """Raise UnmaskRefusedError unless this stage's request is one the site may answer."""
    if stage == Stage.SETUP:
        _check_setup(msg)
    elif stage == Stage.SHARE_KEYS:
        _check_share_keys(msg)
    elif stage == Stage.COLLECT_MASKED_VECTORS:
        _check_collect(msg, ctxt)
    elif stage == Stage.UNMASK:
        _check_unmask(msg, ctxt)
