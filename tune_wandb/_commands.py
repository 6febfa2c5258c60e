"""Commands tune-wandb prints for the user to paste, spelled to work as printed.

A bare ``python -m tune_wandb`` runs whichever ``python`` comes first on
``PATH``, which is often not the one tune-wandb is installed in (a virtual
environment run as ``.venv/bin/python`` and never activated). So a command
names the console script when ``PATH`` finds this interpreter's own, and
this interpreter otherwise.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys


def tune_wandb(*args: str) -> str:
    """A ``tune-wandb`` command line that runs this installation.

    Example:
        >>> tune_wandb("sync", "my dir").endswith(" sync 'my dir'")
        True
    """
    return _join(_program("tune-wandb", "tune_wandb"), args)


def wandb(*args: str) -> str:
    """A ``wandb`` command line that runs the wandb installed beside tune-wandb.

    Example:
        >>> wandb("leet", "exp/wandb").endswith(" leet exp/wandb")
        True
    """
    return _join(_program("wandb", "wandb"), args)


def _program(script: str, module: str) -> list[str]:
    """``[script]`` if ``PATH`` finds this interpreter's own, else ``[interpreter, -m, module]``."""
    own = os.path.join(os.path.dirname(sys.executable), script)
    found = shutil.which(script)
    try:
        if found and os.path.samefile(found, own):
            return [script]
    except OSError:
        pass  # this interpreter has no such script: run the module
    interpreter = shown_path(sys.executable)
    if os.sep not in interpreter:
        interpreter = os.path.join(os.curdir, interpreter)  # not looked up on PATH
    return [interpreter, "-m", module]


def shown_path(path: str) -> str:
    """``path`` relative to the working directory if it is inside it, else absolute.

    Example:
        >>> shown_path(os.path.join(os.getcwd(), "a", "b"))
        'a/b'
    """
    absolute = os.path.abspath(path)
    cwd = os.getcwd()
    if absolute.startswith(cwd.rstrip(os.sep) + os.sep):
        return os.path.relpath(absolute, cwd)
    return absolute


def _join(program: list[str], args: tuple[str, ...]) -> str:
    return shlex.join([*program, *args])
