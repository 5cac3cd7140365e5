"""Compile plain Python functions, and every function of ours they call, with numba: how the fast replay runs the
engine's own rules (`trading.core.rules`, `trading.core.greeks`) instead of a copy of them.

`compiled(entry)` follows the global names each function uses to the functions of `trading.core` and
`backtests` it calls, compiles each once, and wires the compiled copies to call one another (numba cannot call a
Python function). The originals are untouched: the engine keeps calling them as Python.

The machine code is cached on disk under a hash of the source of every module it was compiled from, plus the
numba and Python versions: change any rule and the cache moves, so stale code can never run.
"""
from __future__ import annotations

import hashlib
import inspect
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
from numba.core import config as numba_config

OUR_PACKAGES = ("trading.core.", "backtests.")
CACHE_ROOT = Path(__file__).resolve().parents[1] / "var" / "numba-cache"


def _ours(value: object) -> bool:
    return isinstance(value, types.FunctionType) and value.__module__.startswith(OUR_PACKAGES)


def _closure(entry: types.FunctionType) -> list[types.FunctionType]:
    """`entry` and every function of ours it reaches through its global names, in discovery order."""
    found: dict[int, types.FunctionType] = {}
    todo = [entry]
    while todo:
        fn = todo.pop()
        if id(fn) in found:
            continue
        found[id(fn)] = fn
        names = set(fn.__code__.co_names)
        for const in fn.__code__.co_consts:  # nested code objects (comprehensions) use globals too
            if isinstance(const, types.CodeType):
                names |= set(const.co_names)
        todo += [v for name in names if _ours(v := fn.__globals__.get(name))]
    return list(found.values())


def _modules_reached(functions: list[types.FunctionType]) -> set[str]:
    """The modules of ours the functions live in and, transitively, those they import from: a constant compiled
    in (a transition array built from `fsm`) is only as fresh as the module it was built from."""
    seen: set[str] = set()
    todo = [fn.__module__ for fn in functions]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for value in vars(sys.modules[name]).values():
            origin = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
            if isinstance(origin, str) and (origin + ".").startswith(OUR_PACKAGES) and origin in sys.modules:
                todo.append(origin)
    return seen


def source_hash(functions: list[types.FunctionType], *flags: str) -> str:
    digest = hashlib.sha256(f"numba {numba.__version__} python {sys.version} {flags}".encode())
    for module_name in sorted(_modules_reached(functions)):
        digest.update(module_name.encode())
        digest.update(inspect.getsource(sys.modules[module_name]).encode())
    return digest.hexdigest()[:16]


def compiled(entry: Callable[..., Any], cache_root: Path = CACHE_ROOT, *,
             allocates: bool = True) -> Callable[..., Any]:
    """The numba-compiled `entry`, calling compiled copies of the functions of ours it uses.

    `allocates=False` (nothing it runs creates an array: they all come from the caller) compiles without
    numba's reference counting, whose atomic increments and decrements around every array handed from one inlined
    helper to the next took three quarters of the replay kernel's time; code that does allocate then fails to
    compile rather than run wrong."""
    assert isinstance(entry, types.FunctionType)
    functions = _closure(entry)
    namespaces: dict[str, dict[str, Any]] = {}  # one rewired copy of each module's globals
    clones: dict[int, types.FunctionType] = {}
    for fn in functions:
        namespace = namespaces.setdefault(fn.__module__, dict(fn.__globals__))
        clone = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
        clone.__module__, clone.__qualname__ = fn.__module__, fn.__qualname__
        clones[id(fn)] = clone
    saved = numba_config.CACHE_DIR
    flags = () if allocates else ("no refcounts",)  # numba's own cache index does not tell them apart
    numba_config.CACHE_DIR = str(cache_root / source_hash(functions, *flags))  # read as each dispatcher is made
    try:
        # Every helper is inlined into the entry at numba's IR level: its calls then cost nothing and the
        # state arrays' loads and stores are optimised across them (~1.6x on the replay's kernel).
        jitted = {key: numba.njit(cache=True, inline="never" if key == id(entry) else "always",
                                  _nrt=allocates)(clone)
                  for key, clone in clones.items()}
    finally:
        numba_config.CACHE_DIR = saved
    for namespace in namespaces.values():
        for name, value in namespace.items():
            if isinstance(value, types.FunctionType) and id(value) in jitted:
                namespace[name] = jitted[id(value)]
    return jitted[id(entry)]
