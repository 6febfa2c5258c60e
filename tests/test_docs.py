"""The docs: the site builds strictly and reads well; the README works on PyPI and as run."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tune_wandb

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "https://github.com/tune-wandb/tune-wandb/blob/main/"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs site, built as ``nox -s docs`` builds it (strict)."""
    site = tmp_path_factory.mktemp("site")
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
    return site


def page_text(site: Path, page: str) -> str:
    markup = (site / page / "index.html").read_text(encoding="utf-8")
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", markup)).split())


def test_docs_site_builds_strictly(site: Path) -> None:
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in tune_wandb.__all__:
        assert f'id="tune_wandb.{name}"' in api, f"the API page does not document {name}"
    assert (site / "img" / "bench.png").is_file()
    assert 'class="mermaid"' in (site / "architecture" / "index.html").read_text(encoding="utf-8")


def test_api_signatures_show_default_values_not_constant_names(site: Path) -> None:
    from tune_wandb.callback import DEFAULT_UPLOAD_TIMEOUT

    text = page_text(site, "api")
    assert f"upload_timeout: float = {DEFAULT_UPLOAD_TIMEOUT}," in text
    assert not re.findall(r"\w+: [^=,()]+ = [A-Z][A-Z0-9_]*\b(?! \+)", text)


def test_table_names_are_never_broken_mid_word(site: Path) -> None:
    reference = (site / "reference" / "index.html").read_text(encoding="utf-8")
    assert 'href="../stylesheets/extra.css"' in reference
    css = (site / "stylesheets" / "extra.css").read_text(encoding="utf-8")
    rule = re.search(r"\.md-typeset td:first-child code \{([^}]*)\}", css)
    assert rule and "white-space: nowrap" in rule.group(1)
    assert "word-break: normal" in rule.group(1)


def test_api_page_names_every_public_name() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: tune_wandb\.(\w+)$", text, re.MULTILINE))
    assert documented == set(tune_wandb.__all__)


def readme_links() -> list[str]:
    """The README's links, but those of the Performance section (``nox -s bench``'s)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    performance = re.search(r"^## Performance\n.*?(?=^## )", text, re.S | re.M)
    assert performance, "README.md lost its Performance section"
    text = text.replace(performance.group(0), "")
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_readme_links_work_on_pypi() -> None:
    links = readme_links()
    assert links
    for link in links:
        # PyPI shows the README alone: a relative link leads nowhere there.
        assert link.startswith("https://"), link
        if link.startswith(REPOSITORY):
            assert (ROOT / link[len(REPOSITORY) :]).is_file(), f"{link}: no such file"


def test_readme_says_how_to_build_the_docs() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"```bash\n(.+?)\n```", text, re.S)
    (docs,) = [c for c in commands if c.endswith("nox -s docs")]
    assert docs.startswith("python3 -m venv .venv")
    assert re.search(r"^def docs\(", (ROOT / "noxfile.py").read_text(), re.M)


@pytest.mark.slow
def test_readme_quick_start_runs_and_tune_wandbs_lines_are_not_buried(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = text[text.index("## Quick start") :]
    code = re.search(r"```python\n(.+?)\n```", quick_start, re.S)
    assert code
    env = {k: v for k, v in os.environ.items() if k != "RAY_AIR_NEW_OUTPUT"}
    # ~/ray_results, where the quick start's runs go, inside the test's directory.
    env["HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    lines = done.stdout.splitlines()
    first_ours = next(i for i, line in enumerate(lines) if line.startswith("tune-wandb: "))
    # Tune's status, not a table per result (2 trials x 100 results), comes before ours.
    assert first_ours < 100, "\n".join(lines[:200])
    assert "tune-wandb: 2 W&B runs" in lines
    (experiment,) = (tmp_path / "ray_results").iterdir()
    assert len(list((experiment / "wandb").iterdir())) == 2
