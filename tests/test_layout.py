"""The package's layout: each folder imports only the folders its role allows (with the few exceptions named
here and in docs/plugins.md), no two modules import each other, ``import fedbench`` stays light, and a plugin
written against the module names before the layout still imports them as the very same modules."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import fedbench
from fedbench.plugin.contract import MOVED_MODULES

ROOT = Path(fedbench.__file__).parent
#: the folders from the ground up: a module may import its own folder and any folder below it
FLOORS = ["errors", "plugin", "fl", "engine", "reporting", "runs", "testing", "api", "cli", "__main__"]
#: imports that run up, each for a reason docs/plugins.md gives: the aggregator holds the engine it calls and
#: Client.step runs the one-at-a-time engine; the registry and the core's own registrations check and
#: register client and aggregator classes; the batched evaluation hands a mapped cache entry's pages back
UPWARD = {
    ("fl/aggregator", "engine"), ("fl/client", "engine"),
    ("plugin/registry", "fl"), ("plugin/components", "fl"),
    ("engine/vectorized/evaluate", "runs"),
}


def _module_imports() -> dict[str, set[str]]:
    """module path under the package (no .py) -> the fedbench modules it imports (anywhere in it), as paths."""
    out: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        name = path.relative_to(ROOT).with_suffix("").as_posix().removesuffix("/__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fedbench":
                base = node.module.split(".")[1:]
                for alias in node.names:  # "from fedbench.fl import memory" names a module
                    sub = "/".join(base + [alias.name])
                    found.add(sub if (ROOT / f"{sub}.py").exists() or (ROOT / sub).is_dir() else "/".join(base))
            elif isinstance(node, ast.Import):
                found |= {"/".join(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "fedbench"}
        out[name] = {f for f in found if f}
    return out


def _floor(module: str) -> int:
    return FLOORS.index(module.split("/")[0])


def test_every_import_stays_on_its_floor_or_goes_down_but_the_named_ones():
    upward = set()
    for module, imports in _module_imports().items():
        if not module or module == "__init__":  # the package's face hands names on
            continue
        for target in imports:
            if _floor(target) > _floor(module):
                upward.add((module, target.split("/")[0]))
    assert upward == UPWARD


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path of imports from a module back to itself, or None. A package importing its own modules (to hand
    their names on) is not a loop: a module may import its package's siblings."""
    for start in graph:
        todo, seen = [(t, [start, t]) for t in graph[start]], set()
        while todo:
            node, path = todo.pop()
            if node == start:
                return path
            if node in seen or start.startswith(node + "/"):
                continue
            seen.add(node)
            todo.extend((t, path + [t]) for t in graph.get(node, ()))
    return None


def test_no_two_modules_import_each_other_through_any_path():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check finds one
    assert _cycle({"eng": {"eng/base"}, "eng/base": set(), "eng/seq": {"eng/base"}}) is None
    graph = _module_imports()
    graph = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items() if m}
    assert _cycle(graph) is None


def test_import_fedbench_loads_what_a_plugin_uses_and_not_the_runner_the_store_or_pandas():
    loaded = json.loads(subprocess.run(
        [sys.executable, "-c", "import json, sys, fedbench; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True).stdout)
    ours = {m for m in loaded if m.startswith("fedbench.")}
    assert {"fedbench.fl.client", "fedbench.fl.aggregator", "fedbench.plugin.registry", "fedbench.plugin.params"} <= ours
    assert not {m for m in ours if m.startswith(("fedbench.reporting", "fedbench.api", "fedbench.cli"))}
    assert not {m for m in ours if m.startswith("fedbench.runs.") and m != "fedbench.runs.datacache"}
    assert not {"pandas", "sqlite3", "matplotlib", "ray"} & set(loaded)


def test_a_plugin_written_before_the_layout_imports_the_same_modules_with_a_warning_naming_the_new_place():
    script = """
import importlib, json, sys, warnings
import fedbench
from fedbench.plugin.contract import MOVED_MODULES
out = {}
for old, new in MOVED_MODULES.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    out[old] = [module is sys.modules[new], module.__name__, module.__spec__.name, [str(w.message) for w in caught
                if issubclass(w.category, DeprecationWarning)]]
from fedbench.client import Client
from fedbench.params import Param
out["same classes"] = Client is fedbench.Client and Param is fedbench.Param
print(json.dumps(out))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert out.pop("same classes") is True
    assert set(out) == set(MOVED_MODULES) and len(MOVED_MODULES) >= 30
    for old, (same, name, spec, warned) in out.items():
        new = MOVED_MODULES[old]
        assert same and name == new and spec == new, old
        assert warned == [f"{old} moved to {new}: import it from there"], old
