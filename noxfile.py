"""Developer tasks: ``nox -s tests``, ``smoke``, ``oldest``, ``lint``, ``typecheck``, ``docs``, ...

The supported range is tested in three ways (README, "Supported versions"):
``tests`` runs the whole suite on :data:`FULL_SUITE_PYTHON` at the newest
releases; ``smoke`` runs the unit layer and the smoke subset on every other
supported interpreter at the newest releases; ``oldest`` runs the same on the
oldest interpreter at the oldest supported releases, pinned exactly in
``tests/constraints-oldest.txt``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "smoke", "oldest"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
# uv installs Ray and wandb in seconds where pip takes minutes; virtualenv
# (and pip) where uv is not installed.
nox.options.default_venv_backend = "uv|virtualenv"
# uv does not write bytecode as it installs: in a fresh session every process
# started at once (pytest-xdist's, Ray's workers, the tests' scripts) would
# compile Ray and wandb for itself. On a fresh clone that pushed the corpus
# scripts and the demo past their time limits.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")

#: Every interpreter the package supports (the classifiers in pyproject.toml).
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
#: The full suite runs on the machines' default interpreter.
FULL_SUITE_PYTHON = "3.11"
#: The oldest pins run on the oldest interpreter.
OLDEST_PYTHON = PYTHONS[0]
#: The unit layer and the end-to-end smoke subset (marker ``smoke``).
SMOKE_MARKERS = "unit or smoke"
OLDEST_CONSTRAINTS = Path("tests/constraints-oldest.txt")
#: The matrix sessions' pytest arguments: one process (the subset is a few
#: experiments, and each pytest-xdist process would start Ray of its own), and
#: fewer hypothesis examples (tests/conftest.py's profiles; the full suite
#: runs every property with the full count).
QUICK = ("--hypothesis-profile", "quick")
#: pytest-xdist processes: twice the cores of the 2-core machines CI runs on.
WORKERS = int(os.environ.get("TUNE_WANDB_TEST_WORKERS", "4"))


def _pyenv_interpreters(minors: list[str]) -> None:
    """Let pyenv's shims run every interpreter in ``minors`` that pyenv has installed.

    A shim such as ``python3.10`` runs only the versions pyenv has selected
    (``pyenv global``, usually one), and fails for the rest, so neither nox
    nor uv would find them. Selecting the installed ones after the current
    selection (``PYENV_VERSION=3.11.7:3.10.13:...``, pyenv's own way of
    offering several) keeps ``python3`` as it was and makes the rest found.
    """
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return
    current = subprocess.run(
        [pyenv, "version-name"], capture_output=True, text=True, check=False
    ).stdout.strip()
    root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
    versions = Path(root.stdout.strip()) / "versions"
    if not current or not versions.is_dir():
        return
    selected = current.split(":")
    for minor in minors:
        found = [
            p.name for p in versions.glob(f"{minor}.*") if (p / "bin" / f"python{minor}").exists()
        ]
        # Newest patch last; names such as 3.13.0t sort below the plain release.
        installed = sorted(
            found, key=lambda name: [int(n) if n.isdigit() else -1 for n in name.split(".")]
        )
        if installed and not any(v == minor or v.startswith(f"{minor}.") for v in selected):
            selected.append(installed[-1])
    os.environ["PYENV_VERSION"] = ":".join(selected)


_pyenv_interpreters(PYTHONS)


def install(session: nox.Session, *extras: str, constraints: Path | None = None) -> None:
    """Install the project (editable) with ``extras``, within ``constraints`` if given."""
    target = f".[{','.join(extras)}]" if extras else "."
    args = ["-c", str(constraints)] if constraints else []
    session.install("-e", target, *args)


@nox.session(python=FULL_SUITE_PYTHON)
def tests(session: nox.Session) -> None:
    """Run the whole test suite (real Ray, real wandb); extra args go to pytest instead.

    The tests mostly wait on processes (Tune's, wandb-core's, the test
    server's), so :data:`WORKERS` pytest-xdist processes share the machine's
    cores; those marked ``serial`` compare times against a baseline and run
    afterwards, alone.
    """
    install(session, "test")
    if session.posargs:
        session.run("pytest", *session.posargs)
        return
    # tests/conftest.py's scheduler keeps the modules with a costly module
    # fixture each in one process, the largest first.
    parallel = ["-n", str(WORKERS), "--loadscope-reorder", "--durations", "20"]
    session.run("pytest", "-m", "not serial", *parallel)
    session.run("pytest", "-m", "serial")


@nox.session(python=[p for p in PYTHONS if p != FULL_SUITE_PYTHON])
def smoke(session: nox.Session) -> None:
    """The unit layer and the smoke subset on each other interpreter, at the newest releases."""
    install(session, "test")
    session.run("pytest", "-m", SMOKE_MARKERS, *QUICK, *session.posargs)


@nox.session(python=OLDEST_PYTHON)
def oldest(session: nox.Session) -> None:
    """The unit layer and the smoke subset at the oldest supported Ray and wandb, pinned exactly."""
    install(session, "test", constraints=OLDEST_CONSTRAINTS)
    session.run("pytest", "-m", SMOKE_MARKERS, *QUICK, *session.posargs)


@nox.session(python=FULL_SUITE_PYTHON)
def unit(session: nox.Session) -> None:
    """The unit layer alone: pure logic and doctests, in seconds (no Ray, no processes)."""
    install(session, "test")
    session.run("pytest", "-m", "unit", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and common mistakes with ruff."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy --strict."""
    install(session, "typecheck")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark side by side: no callback, tune-wandb, Ray's built-in callback.

    Writes benchmarks/results/bench.{json,md}, puts the table into README.md
    and draws its chart (docs/img/bench.png, benchmarks/chart.py), then
    measures the driver's memory with a stalled worker
    (benchmarks/results/backlog.{json,md}) and the head node's cost of 16, 256
    and 1,000 concurrent trials (benchmarks/results/scale.{json,md},
    docs/img/scale.png). Extra args go to benchmarks/bench.py
    (``nox -s bench -- --repeats 1``).
    """
    install(session, "bench")
    session.run("python", "benchmarks/bench.py", "--update-readme", *session.posargs)
    session.run("python", "benchmarks/chart.py")
    session.run("python", "benchmarks/backlog.py")
    session.run("python", "benchmarks/scale.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site (mkdocs.yml) with --strict into site/; extra args go to mkdocs."""
    install(session, "docs")
    # Material's end-of-life notice: the decision it asks for is in docs/contributing.md.
    env = {"NO_MKDOCS_2_WARNING": "1"}
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs, env=env)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the demo sweep, logged offline into ./tune-wandb-demo/."""
    install(session)
    session.run("python", "-m", "tune_wandb", "demo", *session.posargs)
