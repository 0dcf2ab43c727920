"""PlainSgd makes torch.optim.SGD's update bit for bit, so the fused path trains as torch would."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fedsafe.common.sgd import PlainSgd


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_update_is_torch_sgds_bit_for_bit(momentum: float) -> None:
    ours, theirs = _model(1), _model(1)
    mine = PlainSgd(ours.parameters(), lr=0.07, momentum=momentum)
    reference = torch.optim.SGD(theirs.parameters(), lr=0.07, momentum=momentum)
    gen = torch.Generator().manual_seed(3)
    for step in range(6):
        x = torch.randn(11, 7, generator=gen)
        for model, opt in ((ours, mine), (theirs, reference)):
            opt.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            if step == 2:  # a parameter without a gradient this step is left alone
                model[2].bias.grad = None
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_private_round_never_imports_torchs_compiler() -> None:
    """The reason PlainSgd exists: torch.optim's first use imports torch._dynamo (~1 s)."""
    code = (
        "import sys, numpy as np, torch\n"
        "from fedsafe.common.training import DpSettings, train_local\n"
        "from fedsafe.common.privacy.randomness import OsRandomness\n"
        "m = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))\n"
        "x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)\n"
        "y = (x[:, 0] > 0).astype(np.int64)\n"
        "train_local(m, x, y, epochs=1, batch_size=16, learning_rate=0.1,\n"
        "            device=torch.device('cpu'), dp=DpSettings(1.0, 1.0),\n"
        "            randomness=OsRandomness())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="learning rate"):
        PlainSgd(_model(0).parameters(), lr=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        PlainSgd(_model(0).parameters(), lr=0.1, momentum=-0.5)
