"""The code passes ruff's pinned checks (pyflakes and pycodestyle errors, see pyproject.toml):
unused imports, undefined names and the like are caught here, not by a user."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "jaxcnn", "experiments", "tests", "notebooks"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
