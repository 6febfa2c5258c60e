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
    """Rename ``Example:`` headings to ``Examples:`` and turn Sphinx roles into links."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring as it is loaded."""
        docstring = getattr(obj, "docstring", None)
        if docstring is None:
            return
        value = _EXAMPLE.sub(r"\1Examples:", docstring.value)
        docstring.value = _ROLE.sub(_link, value)
