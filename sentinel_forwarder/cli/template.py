"""The deployment templates and Sentinel content shipped in the package (``sentinel-forwarder template``).

The files under ``templates/`` are generated from :data:`~sentinel_forwarder.AUDIT_TABLE` and the Sentinel
YAML by ``tools/gen_templates.py`` in the repository, and the wheel ships them as package data:

- ``azuredeploy.json`` / ``azuredeploy-direct.json`` (+ ``.parameters.json``): the table, a DCE + DCR (or a
  Direct DCR) and the Monitoring Metrics Publisher role;
- ``sentinel/``: analytics rules, hunting queries, a workbook, and their YAML sources.
"""

from __future__ import annotations

__all__ = ["read_template", "template_names"]

import sys
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

_SUFFIXES = (".json", ".yaml")


def _root() -> Traversable:
    return files("sentinel_forwarder") / "templates"


def template_names() -> list[str]:
    """Every shipped file, as a ``/``-separated path relative to the templates folder, sorted."""

    def walk(folder: Traversable, prefix: str) -> list[str]:
        out: list[str] = []
        for item in folder.iterdir():
            if item.is_dir():
                out += walk(item, f"{prefix}{item.name}/")
            elif item.name.endswith(_SUFFIXES):
                out.append(prefix + item.name)
        return out

    return sorted(walk(_root(), ""), key=lambda name: (name.count("/"), name))


def read_template(name: str) -> bytes:
    """The contents of one shipped file.

    :param name: as :func:`template_names` lists it, e.g. ``"azuredeploy.json"``.
    :raises KeyError: if there is no such file.
    """
    if name not in template_names():
        raise KeyError(name)
    item = _root()
    for part in name.split("/"):
        item = item / part
    return item.read_bytes()
