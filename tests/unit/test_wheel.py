"""`pip install .` installs one package, `fedsafe`: no top-level `common`, `server` or `client`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: an in-tree build/ folder could carry modules deleted since.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__")
    for folder in ("common", "server", "client", "simulations", "conf"):
        shutil.copytree(ROOT / folder, source / folder, ignore=skip)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (built,) = out.glob("fedsafe-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_only_the_fedsafe_package(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops == {"fedsafe", next(t for t in tops if t.endswith(".dist-info"))}
    names = set(wheel.namelist())
    for module in (
        "server/app.py",
        "client/app.py",
        "common/config/convert.py",
        "simulations/cli.py",
    ):
        assert f"fedsafe/{module}" in names
    assert "fedsafe/conf/config.yaml" in names  # Hydra's configs travel as package data


def test_the_console_script_and_flower_components_name_the_package(
    wheel: zipfile.ZipFile,
) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    assert "fedsafe = fedsafe.simulations.cli:main" in wheel.read(entry_points).decode()


def test_the_report_templates_ship_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    folder = ROOT / "common" / "report" / "templates"
    templates = {f"fedsafe/common/report/templates/{t.name}" for t in folder.glob("*.j2")}

    assert "fedsafe/common/report/templates/run.html.j2" in templates
    assert templates <= set(wheel.namelist())


def test_a_report_renders_from_the_installed_wheel(wheel: zipfile.ZipFile, tmp_path: Path) -> None:
    """Only the wheel's files on the path: a template left out of package data fails here."""
    wheel.extractall(tmp_path / "site")
    script = (
        "import fedsafe.common.report as r\n"
        "report = {'format': 'f', 'generated_at': 't', 'store': 's', 'site': '<x>',\n"
        "          'findings': [{'level': 'ok', 'text': 'fine'}], 'datasets': []}\n"
        "print(r.__file__)\n"
        "print(r.render_site_html(report))\n"
    )
    env = os.environ | {"PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=env,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    where, html = done.stdout.split("\n", 1)
    assert where.startswith(str(tmp_path / "site"))  # not the editable checkout
    assert "Site privacy budget report: &lt;x&gt;" in html and "<style>" in html
