"""The project's own promises about itself: CI runs the README's command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- test-command -->\s*```bash\n(.+?)\n```", text, re.S)
    assert match, "README.md lost its test command block"
    return match.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert lines == [readme_test_command()]


def test_package_ships_type_information() -> None:
    assert (ROOT / "tune_wandb" / "py.typed").exists()
