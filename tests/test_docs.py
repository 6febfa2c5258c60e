"""The docs site builds with ``mkdocs build --strict``: no broken link, no page out of the nav."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import tune_wandb

ROOT = Path(__file__).resolve().parent.parent


def test_docs_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in tune_wandb.__all__:
        assert f'id="tune_wandb.{name}"' in api, f"the API page does not document {name}"
    assert (site / "img" / "bench.png").is_file()
    assert 'class="mermaid"' in (site / "architecture" / "index.html").read_text(encoding="utf-8")


def test_api_page_names_every_public_name() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: tune_wandb\.(\w+)$", text, re.MULTILINE))
    assert documented == set(tune_wandb.__all__)
