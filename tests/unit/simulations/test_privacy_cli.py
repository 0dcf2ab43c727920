"""`fedsafe privacy epsilon|noise` prints the accountant's answer, as JSON with --json."""

from __future__ import annotations

import json

import pytest

from fedsafe.simulations.cli import main


def test_epsilon_json_matches_the_reference_value(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "privacy",
            "epsilon",
            "--noise-multiplier",
            "1.5",
            "--sample-rate",
            "0.04",
            "--steps",
            "2250",
            "--delta",
            "1e-5",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["accountant"] == "rdp" and out["delta"] == 1e-5
    assert out["epsilon"] == pytest.approx(7.32911117143, abs=1e-9)


def test_noise_json_reaches_at_most_the_target(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "privacy",
            "noise",
            "--target-epsilon",
            "3",
            "--sample-rate",
            "0.125",
            "--steps",
            "80",
            "--delta",
            "1e-5",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert 0 < out["epsilon"] <= 3.0 and out["noise_multiplier"] > 0


def test_zero_noise_prints_infinite_epsilon(capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "privacy",
            "epsilon",
            "--noise-multiplier",
            "0",
            "--sample-rate",
            "0.1",
            "--steps",
            "5",
            "--delta",
            "1e-5",
            "--json",
        ]
    )
    assert json.loads(capsys.readouterr().out)["epsilon"] == "inf"


def test_bad_delta_is_an_error_exit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(
            [
                "privacy",
                "epsilon",
                "--noise-multiplier",
                "1",
                "--sample-rate",
                "0.1",
                "--steps",
                "5",
                "--delta",
                "2",
            ]
        )
    assert info.value.code == 2
    assert "--delta: got '2'; allowed: a finite number in (0, 0.1]" in capsys.readouterr().err


def test_plan_json_names_the_round_a_cap_stops_a_site(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "privacy",
            "plan",
            "--site",
            "a=243",
            "--site",
            "b=98",
            "--rounds",
            "5",
            "--target-epsilon",
            "3",
            "--cap",
            "b=2.0",
            "--max-epsilon",
            "10",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    rows = {row["site"]: row for row in out["sites"]}
    assert rows["a"]["cap_round"] is None
    assert rows["b"]["cap_round"] is not None and rows["b"]["cap_round"] <= 5
    assert any("'b'" in w and "max_epsilon=2" in w for w in out["warnings"])


def test_plan_rejects_a_malformed_site(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", "plan", "--site", "a:100"]) == 2
    assert "--site expects NAME=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["epsilon", "--noise-multiplier", "inf"], "--noise-multiplier"),
        (["epsilon", "--noise-multiplier", "nan"], "--noise-multiplier"),
        (["epsilon", "--noise-multiplier=-Infinity"], "--noise-multiplier"),
        (["noise", "--target-epsilon", "inf"], "--target-epsilon"),
    ],
)
def test_infinite_values_are_refused_before_the_accountant_runs(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rest = ["--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5"]
    with pytest.raises(SystemExit) as info:
        main(["privacy", *argv, *rest])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "allowed: a finite number" in err


def test_plan_refuses_a_million_rounds_and_an_infinite_cap(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["privacy", "plan", "--rounds", "1000000"])
    assert "--rounds" in capsys.readouterr().err
    assert main(["privacy", "plan", "--site", "a=100", "--cap", "a=inf"]) == 2
    assert "must be a finite number" in capsys.readouterr().err
