"""One pluggy PluginManager, loaded from the ``fedbench`` entry-point group.

Built-in and third-party plugins load the same way. A plugin that fails to
import, or whose hook raises, is recorded by name in :attr:`Registry.failures`
and the others still load. Lookups of an unknown name raise
:class:`~fedbench.errors.UnknownPluginError` listing the known names and the
closest match.

Environment:
``FEDBENCH_DISABLE_PLUGINS``  comma-separated entry-point names not to load.
``FEDBENCH_TRACE_HOOKS``      when set, print every hook call to stderr.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from fedbench.plugin import contract, hookspecs
from fedbench.errors import PluginError, UnknownPluginError
from fedbench.plugin.specs import Spec

GROUP = "fedbench"
#: the hook marker (re-exported: plugins import it from here or from ``fedbench``)
hookimpl = hookspecs.hookimpl
#: the top-level package of the built-in plugins: they are never shadowed without an explicit opt-in
BUILTIN_PACKAGE = "fedbench_plugins"
#: plugin name of the core's own components (fedbench/plugin/components.py)
CORE_PLUGIN = "fedbench-core"
#: the core's own plugin modules, by plugin name, registered before any entry point: the components (plain
#: client, centralised aggregator) and the executors (``fedbench/runs/executor.py``, which sits above the registry
#: and so is loaded by name, as an entry point would be)
CORE_MODULES = {CORE_PLUGIN: "fedbench.plugin.components", "fedbench-executors": "fedbench.runs.executor"}


def _overrides() -> set[str]:
    """``FEDBENCH_OVERRIDE``: comma-separated names an outside plugin may take from a built-in one
    (``kind:name`` for a component, the entry-point name for a whole plugin)."""
    return {n.strip() for n in os.environ.get("FEDBENCH_OVERRIDE", "").split(",") if n.strip()}

#: kind name -> the registration hook that provides it
KIND_HOOKS: dict[str, str] = {
    "dataset": "fedbench_datasets",
    "model": "fedbench_models",
    "client": "fedbench_clients",
    "aggregator": "fedbench_aggregators",
    "method": "fedbench_methods",
    "suite": "fedbench_suites",
    "partitioner": "fedbench_partitioners",
    "executor": "fedbench_executors",
}


@dataclass(frozen=True)
class Entry:
    """A spec as registered: the spec, its kind and who provides it."""

    kind: str
    spec: Any
    plugin: str
    package: str

    @property
    def name(self) -> str:
        return self.spec.name


class Registry:
    """Specs by kind and name, built from a loaded plugin manager."""

    def __init__(
        self,
        pm: pluggy.PluginManager,
        failures: dict[str, str] | None = None,
        packages: dict[str, str] | None = None,
    ) -> None:
        self.pm = pm
        self.failures: dict[str, str] = dict(failures or {})
        self._packages: dict[str, str] = dict(packages or {})
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KIND_HOOKS}
        for kind, hook_name in KIND_HOOKS.items():
            self._collect(kind, hook_name)
        self._check_references()

    def _fail(self, plugin: str, why: str) -> None:
        self.failures[plugin] = f"{self.failures[plugin]}; {why}" if plugin in self.failures else why

    def _is_builtin(self, plugin: str) -> bool:
        obj = self.pm.get_plugin(plugin)
        name = getattr(obj, "__name__", None) or type(obj).__module__
        return name.split(".")[0] in (BUILTIN_PACKAGE, "fedbench")

    def _collect(self, kind: str, hook_name: str) -> None:
        hook = getattr(self.pm.hook, hook_name)
        trace = bool(os.environ.get("FEDBENCH_TRACE_HOOKS"))
        offered: dict[str, list[Entry]] = {}
        # Call each implementation alone so that we know who provided what, and
        # so that one plugin raising does not hide the others' components.
        for impl in hook.get_hookimpls():
            plugin = impl.plugin_name
            if trace:
                print(f"fedbench: hook {hook_name} -> plugin {plugin}", file=sys.stderr)
            try:
                specs = impl.function() or []
            except Exception as e:  # a broken plugin must not take the others down
                self._fail(plugin, f"hook {hook_name} raised {type(e).__name__}: {e}")
                continue
            for spec in specs:
                if not isinstance(spec, Spec):
                    self._fail(plugin, f"hook {hook_name} returned {type(spec).__name__}, expected a fedbench spec")
                    continue
                why = self._removed_use(kind, spec)
                if why:  # a name a previous plugin API honoured: refused, never silently ignored
                    self._fail(plugin, f"{kind} {spec.name!r} not loaded: {why}")
                    continue
                offered.setdefault(spec.name, []).append(Entry(kind, spec, plugin, self._packages.get(plugin, "?")))
        overrides = _overrides()
        for name, entries in offered.items():
            if len(entries) == 1:
                self._entries[kind][name] = entries[0]
                continue
            # a clash: never a silent winner. The built-in stays unless the user opted in to replace it.
            builtin = [e for e in entries if self._is_builtin(e.plugin)]
            outside = [e for e in entries if not self._is_builtin(e.plugin)]
            who = " and ".join(f"plugin {e.plugin!r} ({e.package})" for e in entries)
            if f"{kind}:{name}" in overrides and len(outside) == 1:
                self._entries[kind][name] = outside[0]
                continue
            if len(builtin) == 1:
                self._entries[kind][name] = builtin[0]
                for e in outside:
                    self._fail(
                        e.plugin,
                        f"{kind} {name!r} is provided by {who}; the built-in one is kept: rename yours, or set "
                        f"FEDBENCH_OVERRIDE={kind}:{name} to replace the built-in",
                    )
            else:
                for e in entries:
                    self._fail(e.plugin, f"{kind} {name!r} is provided by {who}; neither is loaded: rename one of them")

    @staticmethod
    def _removed_use(kind: str, spec: Any) -> str | None:
        """Why a client spec's class uses what the plugin API removed (:mod:`fedbench.plugin.contract`), or None."""
        cls = getattr(spec, "cls", None)
        if kind != "client" or not isinstance(cls, type):
            return None
        from fedbench.fl.client import Client  # (the client module imports torch; the registry does not need it sooner)

        return contract.removed_use(cls, Client) if issubclass(cls, Client) else None

    def _check_references(self) -> None:
        """Drop, and report by plugin, every method that names a client type or aggregator nobody provides."""
        for name, entry in list(self._entries["method"].items()):
            for kind, wanted in (("client", entry.spec.client), ("aggregator", entry.spec.aggregator)):
                if wanted not in self._entries[kind]:
                    known = ", ".join(sorted(self._entries[kind])) or "none"
                    self._fail(entry.plugin, f"method {name!r} names unknown {kind} {wanted!r} (known: {known}); it is not loaded")
                    del self._entries["method"][name]
                    break

    def names(self, kind: str) -> list[str]:
        """Sorted names registered for ``kind``."""
        return sorted(self._kind(kind))

    def entries(self, kind: str) -> list[Entry]:
        """Entries registered for ``kind``, sorted by name."""
        entries = self._kind(kind)
        return [entries[name] for name in sorted(entries)]

    def entry(self, kind: str, name: str) -> Entry:
        """The entry for (kind, name); an unknown name lists the known ones."""
        entries = self._kind(kind)
        if name in entries:
            return entries[name]
        known = sorted(entries)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        broken = f" (plugins that failed to load: {', '.join(sorted(self.failures))})" if self.failures else ""
        raise UnknownPluginError(
            f"unknown {kind} {name!r}{hint} known {kind}s: {', '.join(known) or 'none'}{broken}; "
            f"see `fedbench list {kind}`"
        )

    def get(self, kind: str, name: str) -> Any:
        """The spec for (kind, name)."""
        return self.entry(kind, name).spec

    def _kind(self, kind: str) -> dict[str, Entry]:
        if kind not in self._entries:
            raise UnknownPluginError(f"unknown plugin kind {kind!r}; kinds are: {', '.join(KIND_HOOKS)}")
        return self._entries[kind]


def new_plugin_manager() -> pluggy.PluginManager:
    """A manager that knows fedbench's hookspecs and nothing else."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


def load_entry_points(pm: pluggy.PluginManager) -> tuple[dict[str, str], dict[str, str]]:
    """Register every plugin of the entry-point group.

    Returns ``(failures, packages)``: why each broken plugin was skipped, and
    the distribution that provides each loaded one. Unlike
    ``pm.load_setuptools_entrypoints``, one broken plugin is recorded instead
    of aborting the load of all the others.
    """
    disabled = {n.strip() for n in os.environ.get("FEDBENCH_DISABLE_PLUGINS", "").split(",") if n.strip()}
    known_hooks = set(KIND_HOOKS.values())
    failures: dict[str, str] = {}
    packages: dict[str, str] = {}
    by_name: dict[str, dict[str, Any]] = {}
    for ep in entry_points(group=GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        by_name.setdefault(ep.name, {}).setdefault(dist, ep)
    for name, offered in by_name.items():
        if name in disabled or pm.get_plugin(name) is not None:
            continue
        ep = next(iter(offered.values()))
        if len(offered) > 1:
            builtin = [e for e in offered.values() if e.value.split(".")[0] == BUILTIN_PACKAGE]
            outside = [e for e in offered.values() if e.value.split(".")[0] != BUILTIN_PACKAGE]
            who = " and ".join(f"{dist} ({e.value})" for dist, e in offered.items())
            if name in _overrides() and len(outside) == 1:
                ep = outside[0]
            elif len(builtin) == 1:
                ep = builtin[0]
                for e in outside:
                    failures[f"{e.dist.name if e.dist else '?'}:{name}"] = (
                        f"entry point {name!r} is registered by {who}; the built-in one is loaded: rename yours, or set "
                        f"FEDBENCH_OVERRIDE={name} to load yours instead"
                    )
            else:
                failures[name] = f"entry point {name!r} is registered by {who}; neither is loaded: rename one of them"
                continue
        try:
            plugin = _load_in_time(ep, name)
            unknown = sorted(
                a for a in dir(plugin)
                if hasattr(getattr(plugin, a), f"{GROUP}_impl") and a not in known_hooks
            )
            if unknown:
                raise PluginError(
                    f"defines unknown hook(s) {', '.join(unknown)}; known hooks: {', '.join(sorted(known_hooks))}"
                )
            too_new = contract.check_declared(plugin, name)
            if too_new:
                raise PluginError(too_new)
            pm.register(plugin, name=name)
        except Exception as e:  # report by name; the rest still load
            failures[name] = f"loading {ep.value} failed: {type(e).__name__}: {e}"
            continue
        packages[name] = ep.dist.name if ep.dist is not None else "?"
    return failures, packages


#: seconds a plugin's module may take to import (``FEDBENCH_IMPORT_TIMEOUT``) before it is skipped by name
IMPORT_TIMEOUT = 60.0


class _ImportTimeout(Exception):
    pass


def _load_in_time(ep: Any, name: str) -> Any:
    """``ep.load()``, stopped after :data:`IMPORT_TIMEOUT` seconds (a plugin that hangs at import would hang
    every command, ``report`` included) by a timer signal in the main thread; elsewhere, or where there is no
    such timer, plainly."""
    import signal
    import threading

    try:
        limit = float(os.environ.get("FEDBENCH_IMPORT_TIMEOUT", IMPORT_TIMEOUT))
    except ValueError:
        limit = IMPORT_TIMEOUT
    if limit <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return ep.load()

    def stop(_signum, _frame) -> None:  # noqa: ANN001
        raise _ImportTimeout

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return ep.load()
    except _ImportTimeout:
        raise PluginError(f"importing {ep.value} did not finish in {limit:g} s (does it wait for something at import?); "
                          f"skipped: fix it, disable it (FEDBENCH_DISABLE_PLUGINS={name}) or allow longer "
                          "(FEDBENCH_IMPORT_TIMEOUT=SECONDS)") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@functools.lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    pm = new_plugin_manager()
    return Registry(pm, *load_plugins(pm))


def load_plugins(pm: pluggy.PluginManager) -> tuple[dict[str, str], dict[str, str]]:
    """Register the core's own plugin modules (:data:`CORE_MODULES`, through the same hooks) and every
    entry-point plugin; returns :func:`load_entry_points`' ``(failures, packages)``."""
    for name, module in CORE_MODULES.items():
        pm.register(importlib.import_module(module), name=name)
    failures, packages = load_entry_points(pm)
    return failures, {**packages, **dict.fromkeys(CORE_MODULES, "fedbench-suite")}


