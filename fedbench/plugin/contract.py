"""The plugin contract: its version, and what a version removed that a plugin may still use.

``PLUGIN_API`` is the version of what docs/plugins.md calls stable: the hook names and signatures,
the spec records, and what a client type or aggregator may override or set. It goes up by one when
something a plugin could rely on is removed or changes meaning; every such removal is listed in
:data:`REMOVED` with its replacement, and a plugin that still uses it is refused at load (and a
client that sets it at run time fails there), with one line naming the replacement: never a run
that silently computes another algorithm.

A plugin module may declare the version it was written for, ``FEDBENCH_PLUGIN_API = N``; one written
for a newer version than this fedbench is refused at load.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import inspect
import re
import sys
import warnings

from fedbench.errors import PluginError

#: the version of the plugin API this fedbench implements (version 1: until the local objective moved
#: to ``Client.local_term``, 2026-11-26; version 2: until BatchNorm averages travelled in the instructions,
#: ``Aggregator.buffers_for`` replacing ``send_buffers``, 2026-12-06: :data:`REMOVED_AGGREGATOR`)
PLUGIN_API = 3

#: client-type names a previous version honoured and this one does not: name -> (the version that
#: removed it, what to write instead)
REMOVED: dict[str, tuple[int, str]] = {
    "proximal_mu": (2, "return the proximal term from local_term(theta, ctx): "
                       "mu / 2 * (theta - ctx['received']).pow(2).sum()"),
    "gradient_shift": (2, "return <shift, theta> from local_term(theta, ctx), the shift passed per learner "
                          "through term_context or the round's extras (as SCAFFOLD's correction)"),
    "penalties": (2, "return the term from local_term(theta, ctx) (theta: one learner's flat parameters)"),
}


#: aggregator methods a previous version called and this one does not: name -> (the version that removed it, its
#: old call, what to write instead); an aggregator class defining one is refused where it is defined
REMOVED_AGGREGATOR: dict[str, tuple[int, str, str]] = {
    "send_buffers": (3, "send_buffers(clients)",
                     "it would be ignored and clients would train with other BatchNorm statistics; return a client's "
                     "buffers from buffers_for(client) instead: they travel in its FitIns and EvaluateIns"),
}


def removed_aggregator_method(cls: type) -> str | None:
    """One line naming the first removed aggregator method (:data:`REMOVED_AGGREGATOR`) that ``cls`` itself
    defines, and its replacement; None when it defines none."""
    for name, (version, call, instead) in REMOVED_AGGREGATOR.items():
        if name in vars(cls):
            return (f"aggregator {cls.__name__} ({cls.__module__}) defines {call}, which fedbench no longer calls "
                    f"(plugin API {version}): {instead} (docs/plugins.md)")
    return None


def removed_message(owner: str, name: str) -> str:
    version, instead = REMOVED[name]
    return (f"{owner} uses {name!r}, which fedbench's plugin API {version} removed (it would be ignored and the "
            f"run would compute another algorithm); {instead} (docs/plugins.md, 'Clients')")


def removed_use(cls: type, base: type) -> str | None:
    """The first removed name ``cls`` (a subclass of ``base``) defines or assigns, as one line, or None.

    Looks at the class attributes and methods of every class between ``cls`` and ``base``, and at their
    source for ``self.NAME =`` assignments (where the source is available)."""
    own = [k for k in cls.__mro__ if k not in base.__mro__]
    for klass in own:
        for name in REMOVED:
            if name in vars(klass):
                return removed_message(f"client type {cls.__name__} ({klass.__module__})", name)
    pattern = re.compile(r"\bself\s*\.\s*(" + "|".join(map(re.escape, REMOVED)) + r")\s*=[^=]")
    for klass in own:
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        found = pattern.search(source)
        if found:
            return removed_message(f"client type {cls.__name__} ({klass.__module__})", found.group(1))
    return None


def check_declared(module: object, plugin: str) -> str | None:
    """Why a plugin module declaring ``FEDBENCH_PLUGIN_API`` cannot load here, or None."""
    wanted = getattr(module, "FEDBENCH_PLUGIN_API", None)
    if wanted is None:
        return None
    if not isinstance(wanted, int) or isinstance(wanted, bool):
        return f"plugin {plugin!r} declares FEDBENCH_PLUGIN_API = {wanted!r}; it must be an integer"
    if wanted > PLUGIN_API:
        return (f"plugin {plugin!r} is written for fedbench plugin API {wanted}, this fedbench implements "
                f"{PLUGIN_API}: upgrade fedbench")
    return None


class Removed:
    """A name the plugin API removed, as a client attribute: setting it fails with the replacement (a client
    that sets it in ``__init__`` fails when the run builds its clients, before training)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> object:
        raise AttributeError(removed_message("this client", self.name))

    def __set__(self, obj: object, value: object) -> None:
        raise PluginError(removed_message(f"client type {type(obj).__name__}", self.name))


def guard(base: type) -> None:
    """Put a :class:`Removed` on ``base`` for every removed name (the client base class calls it once)."""
    for name in REMOVED:
        setattr(base, name, Removed(name))


#: modules that moved into the layout's subpackages (2026-12-06), old name -> new name: a plugin importing an
#: old name gets the very same module object (one copy, so one class per name), with a DeprecationWarning
MOVED_MODULES: dict[str, str] = {
    f"fedbench.{name}": f"fedbench.{package}.{name}"
    for package, names in {
        "fl": ("aggregator", "client", "config", "data", "dropout", "learner", "memory", "messages", "metrics", "recurrent",
               "seeding", "tasks"),
        "plugin": ("components", "contract", "hookspecs", "params", "registry", "specs"),
        "runs": ("build", "client_state", "datacache", "executor", "fingerprint", "partition", "runner",
                 "suite"),
        "reporting": ("export", "htmlreport", "plot", "report", "store"),
    }.items()
    for name in names
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an import of a name in :data:`MOVED_MODULES` with the module at its new name."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 - importlib's signature
        return importlib.util.spec_from_loader(name, self) if name in MOVED_MODULES else None

    def create_module(self, spec):  # noqa: ANN001, ANN201
        new = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} moved to {new}: import it from there", DeprecationWarning, stacklevel=4)
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__  # the import system sets the old name's spec on the module next
        return module

    def exec_module(self, module) -> None:  # noqa: ANN001
        module.__spec__ = module.__spec__.loader_state  # the module keeps its own spec


def install_moved_modules() -> None:
    """Let the old module names of :data:`MOVED_MODULES` import (once per process)."""
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.append(MovedModules())
