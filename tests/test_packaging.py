"""The project's own promises about itself: CI runs the README's command; it packages whole."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

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


# -- what a distribution packager builds ------------------------------------

#: Not sources: environments, caches, build output, the demo's experiments.
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".nox",
    ".venv",
    "site",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".*_cache",
    ".hypothesis",
    "tune-wandb-demo",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel, built from a copy of the sources by setuptools."""
    source = tmp_path_factory.mktemp("source") / "tune-wandb"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES, symlinks=True)
    out = tmp_path_factory.mktemp("dist")
    # setuptools' build_meta rewrites sys.argv as it builds: read it first.
    build = (
        "import sys\n"
        "from setuptools import build_meta\n"
        "out = sys.argv[1]\n"
        "build_meta.build_sdist(out)\n"
        "build_meta.build_wheel(out)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", build, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def test_build_requires_a_setuptools_that_builds_the_license_expression() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license = "Apache-2.0"$', text, re.M)
    requires = re.search(r'^requires = \["setuptools>=(\d+)"\]$', text, re.M)
    # setuptools 77 is the first to build a PEP 639 license expression.
    assert requires and int(requires.group(1)) >= 77


def test_sdist_holds_what_builds_tests_and_documents_the_package(
    built: tuple[Path, Path],
) -> None:
    sdist, _ = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    sources = {
        str(path.relative_to(ROOT))
        for folder in ("tune_wandb", "tests", "docs", "benchmarks")
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    expected = {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "MANIFEST.in"}
    expected |= {"noxfile.py", "mkdocs.yml", ".ci/run"}
    assert expected | sources <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_wheel_holds_the_package_its_license_and_true_metadata(built: tuple[Path, Path]) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_name).decode()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    package = {f"tune_wandb/{p.name}" for p in (ROOT / "tune_wandb").iterdir() if p.is_file()}
    assert package <= names and "tune_wandb/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "docs/"))]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "tune-wandb = tune_wandb.__main__:main" in scripts

    fields = re.findall(r"^([\w-]+): (.*)$", metadata.split("\n\n", 1)[0], re.M)
    values = [f"{key}: {value}" for key, value in fields]
    assert "License-Expression: Apache-2.0" in values and "License-File: LICENSE" in values
    classifiers = [v for k, v in fields if k == "Classifier"]
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    versions = [c.rsplit(" ", 1)[-1] for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c)]
    # Every version from requires-python on that runs the demo (3.10 to 3.13).
    assert versions == ["3.10", "3.11", "3.12", "3.13"]
    assert "Requires-Python: >=3.10" in values
    requires = [v for k, v in fields if k == "Requires-Dist"]
    assert 'tune-wandb[media]; extra == "test"' in requires
    assert 'moviepy<3,>=1.0; extra == "media"' in requires


def test_every_extra_is_installed_by_a_task_or_offered_to_users() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    section = text[text.index("[project.optional-dependencies]") :].split("\n[", 1)[0]
    extras = set(re.findall(r"^([\w-]+) = \[", section, re.M))
    used = set(re.findall(r'install\(session, "(\w+)"\)', (ROOT / "noxfile.py").read_text()))
    offered = set(re.findall(r"tune-wandb\[(\w+)\]", (ROOT / "README.md").read_text()))
    assert extras and extras <= used | offered, extras - used - offered


# -- the supported range and the sessions that test it -----------------------


def project_dependencies() -> list[Requirement]:
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("\ndependencies = [", 1)[1].split("\n]", 1)[0]
    return [Requirement(spec) for spec in re.findall(r'^\s*"([^"]+)",', block, re.M)]


@pytest.mark.unit
def test_the_oldest_session_pins_every_floor() -> None:
    pins = {}
    for line in (ROOT / "tests" / "constraints-oldest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = Version(version)
    dependencies = project_dependencies()
    assert {r.name for r in dependencies} == set(pins)
    for requirement in dependencies:
        (floor,) = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        pin = pins[requirement.name]
        # The floor itself, or a patch release of it (numpy>=1.24: 1.24.4).
        assert pin in requirement.specifier and pin.release[: len(floor.release)] == floor.release


@pytest.mark.unit
def test_nox_runs_every_python_the_package_declares() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    declared = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', pyproject)
    nox_line = re.search(r"^PYTHONS = \[(.*)\]$", (ROOT / "noxfile.py").read_text(), re.M)
    assert nox_line
    assert re.findall(r'"(3\.\d+)"', nox_line.group(1)) == declared
    assert f'requires-python = ">={declared[0]}"' in pyproject
