"""Developer tasks: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``, ``bench``, ``demo``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True


def install(session: nox.Session, *extras: str) -> None:
    """Install the project (editable) with ``extras`` into the session's venv."""
    target = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", target)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (real Ray, real wandb offline); extra args go to pytest."""
    install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session
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
