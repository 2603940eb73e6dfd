"""Packaging facts the layout depends on: `agentgov` imports from operator/, the standard
library's `operator` is never shadowed, and the layers only import downwards."""

from __future__ import annotations

import operator
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import agentgov

REPO = Path(__file__).resolve().parents[2]
STDLIB_CHECK = "import operator, sys; assert operator.itemgetter(0)([7]) == 7, operator; print(operator.__file__)"


def test_agentgov_is_imported_from_the_operator_folder() -> None:
    assert Path(agentgov.__file__).resolve().parent == REPO / "operator" / "agentgov"


def test_stdlib_operator_is_intact_in_the_test_process() -> None:
    assert operator.itemgetter(1)("ab") == "b"
    assert not Path(operator.__file__).resolve().is_relative_to(REPO)


@pytest.mark.parametrize(
    "flags, path_entries",
    [
        ([], []),
        (["-S"], []),
        (["-I"], []),
        ([], [str(REPO)]),
        (["-S"], [str(REPO)]),
    ],
    ids=[
        "a plain interpreter started in the repository root",
        "without site-packages (python -S)",
        "in isolated mode (python -I)",
        "with the repository root on PYTHONPATH",
        "without site-packages and with the root on PYTHONPATH",
    ],
)
def test_import_operator_resolves_to_the_standard_library(flags: list[str], path_entries: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(path_entries)}
    result = subprocess.run(
        [sys.executable, *flags, "-c", STDLIB_CHECK], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert not Path(result.stdout.strip()).resolve().is_relative_to(REPO)


def test_operator_folder_is_not_a_package() -> None:
    assert not (REPO / "operator" / "__init__.py").exists()


def test_layers_only_import_downwards() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is part of the test extras"
    result = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken" in result.stdout


def test_package_type_checks_under_mypy_strict() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
