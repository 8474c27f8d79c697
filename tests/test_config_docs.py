"""Every parameter a config can reach is documented in an ``Args:`` block of the class or function it reaches,
MONAI style: the test walks every ``_target_`` and every ``bundle.<...>(`` call of every config file."""

import importlib
import inspect
import json
import re
from pathlib import Path

import pytest
from monai.bundle.config_item import ComponentLocator

from bundle.criteria import CRITERIA
from bundle.saliency import METHODS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.json") if p.name != "metadata.json" and "schema" not in p.parts)
CALL = re.compile(r"\bbundle((?:\.\w+)+)\s*\(")
REGISTRIES = {"bundle.saliency.get_method": METHODS, "bundle.criteria.get_criterion": CRITERIA}


def _resolve(path: str):
    """The object a dotted ``bundle.`` path names (modules imported as needed), or None when it names none."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name, None)
        return obj
    return None


def _walk(node, found: set):
    """Collect the bundle callables a config node reaches: ``_target_``s (through the method and criterion
    registries) and calls in ``$`` expressions."""
    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str):
            module = target if "." in target else ComponentLocator().get_component_module_name(target)
            module = module[0] if isinstance(module, list) else module
            if module and module.startswith("bundle"):
                registry = REGISTRIES.get(target)
                name = node.get("name")
                found.add(registry[name] if registry is not None and name in registry else _resolve(target))
        for value in node.values():
            _walk(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, found)
    elif isinstance(node, str) and node.startswith("$"):
        for path in CALL.findall(node):
            obj = _resolve("bundle" + path)
            if callable(obj):
                found.add(obj)


def _reached() -> list:
    found: set = set()
    for path in CONFIGS:
        _walk(json.loads(path.read_text()), found)
    found.discard(None)
    return sorted(found, key=lambda obj: f"{obj.__module__}.{obj.__qualname__}")


def _documented(obj) -> set[str]:
    """The names an ``Args:`` block of the object's docstrings (class and ``__init__``) describes."""
    docs = [inspect.getdoc(obj) or ""]
    if inspect.isclass(obj):
        docs.append(inspect.getdoc(obj.__init__) or "")
    names = set()
    for doc in docs:
        block = re.split(r"^Args:\s*$", doc, maxsplit=1, flags=re.M)
        if len(block) == 2:
            names |= set(re.findall(r"^\s{4}(\w+)(?:\s*\([^)]*\))?:", block[1], flags=re.M))
    return names


def _parameters(obj) -> list[str]:
    signature = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in signature.parameters.values() if p.name != "self" and p.kind not in skip]


def test_the_walk_reaches_the_registries_and_the_expressions():
    names = {f"{obj.__module__}.{obj.__qualname__}" for obj in _reached()}
    assert {METHODS["xrai"], CRITERIA["psc"]} <= set(_reached())
    assert "bundle.tracking.sqlite_uri" in names and "bundle.study.SaliencyStudy" in names


@pytest.mark.parametrize("obj", _reached(), ids=lambda obj: f"{obj.__module__}.{obj.__qualname__}")
def test_every_parameter_a_config_reaches_is_documented(obj):
    missing = [name for name in _parameters(obj) if name not in _documented(obj)]
    assert not missing, f"{obj.__module__}.{obj.__qualname__}: no Args: entry for {missing}"
