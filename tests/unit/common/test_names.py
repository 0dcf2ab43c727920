"""The one naming rule: anything that could pick another folder is refused, by key."""

import pytest

from fedsafe.common.errors import ConfigError
from fedsafe.common.names import check_name, is_valid_name


@pytest.mark.parametrize("name", ["cleveland", "bank_west", "run-2026.12.01", "A1"])
def test_plain_names_pass(name: str) -> None:
    assert check_name("site", name) == name


@pytest.mark.parametrize(
    "name", ["", "..", "../x", "a/b", "a\\b", ".hidden", "-x", "a..b", "x" * 65, None, 3, "é"]
)
def test_names_that_could_escape_a_folder_are_refused(name: object) -> None:
    assert not is_valid_name(name)
    with pytest.raises(ConfigError, match="run_id"):
        check_name("run_id", name, source="cli")
