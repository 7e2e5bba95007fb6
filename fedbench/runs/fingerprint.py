"""What code computed a result: a fingerprint of the sources a run depends on, and the environment.

A run's id hashes its configuration *and* this fingerprint, so editing the
numerics (ours or an outside plugin's) never silently reuses results computed
by other code. The fingerprint covers the core package (less the modules that
only present results) and, for every component a run uses, the module that
defines it, its plugin's module and every module of the same top-level package
they reach through their globals (modules, functions, classes; a constant imported by value is not
followed), plus the providing distribution's version. Modules of the standard library and of installed
packages count through their distribution's version, not their source.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import site
import sys
import sysconfig
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

#: core modules that only show or schedule results, by path under the package without ``.py`` (a folder: every
#: module in it): editing them cannot change a number
PRESENTATION = frozenset({"cli", "__main__", "api", "runs/executor", "runs/fingerprint", "runs/suite", "reporting"})


def presentation(name: str) -> bool:
    """Whether the module at ``name`` (a path under the package, ``.py`` dropped) is in :data:`PRESENTATION`."""
    return any(name == p or name.startswith(p + "/") for p in PRESENTATION)


def _source(module: ModuleType) -> bytes:
    file = getattr(module, "__file__", None)
    if not file:
        return b""
    try:
        return Path(file).read_bytes()
    except OSError:
        return b""


@functools.lru_cache(maxsize=1)
def _library_dirs() -> tuple[str, ...]:
    """Folders of the standard library and of installed packages: their modules are versioned by
    their distributions, not hashed."""
    dirs = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        dirs.update(site.getsitepackages())
        dirs.add(site.getusersitepackages())
    except AttributeError:  # some virtualenv builds lack these
        pass
    return tuple(str(Path(d).resolve()) + os.sep for d in dirs if d)


def _own_code(module: ModuleType, top: str) -> bool:
    """Whether a reached module is part of the plugin's own code: the same top-level package, or a
    module outside the standard library and the installed packages (a helper next to the plugin)."""
    if module.__name__.split(".")[0] == top:
        return True
    file = getattr(module, "__file__", None)
    if not file:
        return False
    return not str(Path(file).resolve()).startswith(_library_dirs())


def reached_modules(obj: Any) -> dict[str, ModuleType]:
    """The module defining ``obj`` and every module of its own code it reaches through module
    globals (modules, functions and classes it imports), by name."""
    start = obj if inspect.ismodule(obj) else inspect.getmodule(obj if inspect.isclass(obj) or callable(obj) else type(obj))
    if start is None:
        return {}
    top = start.__name__.split(".")[0]
    seen: dict[str, ModuleType] = {}
    todo = [start]
    while todo:
        mod = todo.pop()
        if mod.__name__ in seen:
            continue
        seen[mod.__name__] = mod
        for value in list(vars(mod).values()):
            if inspect.ismodule(value):
                name = value.__name__
            elif inspect.isclass(value) or inspect.isfunction(value):
                name = getattr(value, "__module__", None) or ""
            else:
                continue
            if name not in seen and name in sys.modules and _own_code(sys.modules[name], top):
                todo.append(sys.modules[name])
    return seen


@functools.lru_cache(maxsize=1)
def core_fingerprint() -> str:
    """Hash of the core's sources that can change numbers (:func:`package_fingerprint` of this package)."""
    import fedbench

    return package_fingerprint(Path(fedbench.__file__).parent)


def package_fingerprint(root: Path) -> str:
    """Hash of the sources under ``root``: every module, subpackages included (by path from ``root``), less
    the :data:`PRESENTATION` modules."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        name = path.relative_to(root).as_posix()
        if not presentation(name.removesuffix(".py")):
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _dist_version(package: str) -> str:
    try:
        return metadata.version(package)
    except Exception:  # noqa: BLE001 - not installed as a distribution (e.g. registered by hand)
        return "?"


@functools.lru_cache(maxsize=256)
def component_fingerprint(registry: Any, kind: str, name: str) -> str:
    """Hash of the sources behind one registered component, and its distribution's version."""
    entry = registry.entry(kind, name)
    objects = [registry.pm.get_plugin(entry.plugin)]
    for attr in ("load", "build", "cls", "partition"):
        if hasattr(entry.spec, attr) and getattr(entry.spec, attr) is not None:
            objects.append(getattr(entry.spec, attr))
    modules: dict[str, ModuleType] = {}
    for obj in objects:
        if obj is not None:
            modules.update(reached_modules(obj))
    h = hashlib.sha256(f"{kind}:{name}:{entry.package}:{_dist_version(entry.package)}".encode())
    for mod_name in sorted(modules):
        if mod_name.split(".")[0] == "fedbench":  # the core is hashed once, in core_fingerprint
            continue
        h.update(mod_name.encode() + b"\0" + _source(modules[mod_name]) + b"\0")
    return h.hexdigest()[:16]


def code_fingerprint(registry: Any, components: list[tuple[str, str]]) -> str:
    """One hash over the core and the given (kind, name) components."""
    h = hashlib.sha256(core_fingerprint().encode())
    for kind, name in sorted(set(components)):
        h.update(f"{kind}:{name}={component_fingerprint(registry, kind, name)};".encode())
    return h.hexdigest()[:16]
