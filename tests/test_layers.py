"""The layering contracts of .importlinter: they read the package as installed and break on an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
#: the package's folders, mapped as pyproject.toml's package-dir maps them (bench/benchmarks lies inside bench/)
PACKAGE_DIR = {"vaebench": "bench", "vaebench/methods": "methods", "vaebench/datasets": "datasets"}


def installed_copy(site: Path) -> Path:
    """The source tree laid out as an installed vaebench, which import-linter reads (an editable
    install maps methods/ and datasets/ through an import hook that it does not follow)."""
    for target, source in PACKAGE_DIR.items():
        shutil.copytree(ROOT / source, site / target, ignore=shutil.ignore_patterns("__pycache__"))
    return site / "vaebench"


def lint_imports(site: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("lint-imports")
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
    return subprocess.run([*command, str(ROOT / ".importlinter"), "--no-cache"], capture_output=True, text=True,
                          cwd=site, env={**os.environ, "PYTHONPATH": str(site)})


def test_an_upward_import_breaks_the_layers_and_a_method_import_breaks_the_estimators(tmp_path):
    package = installed_copy(tmp_path)
    # one import inside a function (still an import) from the bottom layer up to the CLI,
    # and an estimator importing a method
    with open(package / "records.py", "a") as f:
        f.write("\n\ndef _upward():\n    from vaebench import cli  # noqa: F401\n")
    with open(package / "quadrature.py", "a") as f:
        f.write("\n\nimport vaebench.methods.vae  # noqa: E402,F401\n")
    out = lint_imports(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    text = " ".join(out.stdout.split())
    assert "vaebench.records is not allowed to import vaebench.cli" in text
    assert "vaebench.quadrature is not allowed to import vaebench.methods" in text
    # the upward import also gives the posterior track's report a path up to its study (through the CLI)
    assert "vaebench.posterior.report is not allowed to import vaebench.posterior.study" in text
    assert "BROKEN" in text and "Contracts: 0 kept, 3 broken." in text
