"""A griffe extension for the docs build: docstrings written for doctest and Sphinx, as Markdown.

The package's docstrings head their doctests ``Example:`` (the form
pydocstyle's Google convention and the doctests themselves use); griffe's
Google parser takes only ``Examples:`` as a section of ``>>>`` code and reads
``Example:`` as an admonition of Markdown text, where ``>>>`` becomes nested
quotes and ``[...][-1]`` a broken cross-reference. Their Sphinx roles
(``:func:`~tune_wandb.run```) become links of the API page. Only the copy of
each docstring that mkdocstrings renders is changed; the sources stay as they
are. A role naming something the API page does not document fails the
strict build.

A parameter whose default is a module constant (``upload_timeout =
DEFAULT_UPLOAD_TIMEOUT``) shows the constant's value in its signature, as the
reader needs it.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|obj):`(~?)([\w.]+)`")


def _link(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    shown = target.rsplit(".", 1)[-1] if short else target
    if "." not in target:
        target = f"tune_wandb.{target}"
    return f"[`{shown}`][{target}]"


class DocstringsAsMarkdown(griffe.Extension):
    """``Example:`` headings as ``Examples:``, Sphinx roles as links, defaults as values."""

    def on_function(self, *, func: griffe.Function, **kwargs: Any) -> None:
        """Replace each default that names a constant of the function's module by its value."""
        for parameter in func.parameters:
            default = parameter.default
            if not isinstance(default, griffe.ExprName):
                continue
            constant = func.module.members.get(default.name)
            value = getattr(constant, "value", None)
            if isinstance(constant, griffe.Attribute) and isinstance(value, str):
                parameter.default = value

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring as it is loaded."""
        docstring = getattr(obj, "docstring", None)
        if docstring is None:
            return
        value = _EXAMPLE.sub(r"\1Examples:", docstring.value)
        docstring.value = _ROLE.sub(_link, value)
