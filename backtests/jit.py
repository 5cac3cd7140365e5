"""Compile plain Python functions, and every function of ours they call, with numba: how the fast replay runs the
engine's own rules (`trading.core.rules`, `trading.core.greeks`) instead of a copy of them.

Both ways follow the global names each function uses to the functions of `trading.core` and `backtests` it calls,
compile each once, and wire the compiled copies to call one another (numba cannot call a Python function). The
originals are untouched: the engine keeps calling them as Python.
- `native(entry, signature)`: ahead of time, into a native extension module (numba's pycc and the C compiler). A
  process that finds it built imports it without loading numba at all: numba's import, its typing registries and
  the scipy.linalg it pulls in cost a backtest 0.5-1 s of start-up. The replay kernel runs this way.
- `compiled(entry)`: numba's own just-in-time dispatcher, typed at the first call (tests, benchmarks).

The machine code is kept on disk under a hash of the source of every module it was compiled from, plus the numba
and Python versions: change any rule and the cache moves, so stale code can never run.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import inspect
import logging
import platform
import re
import shutil
import sys
import sysconfig
import tempfile
import types
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

OUR_PACKAGES = ("trading.core.", "backtests.")
CACHE_ROOT = Path(__file__).resolve().parents[1] / "var" / "numba-cache"

log = logging.getLogger(__name__)


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
    digest = hashlib.sha256(f"numba {version('numba')} python {sys.version} {flags}".encode())
    for module_name in sorted(_modules_reached(functions)):
        digest.update(module_name.encode())
        digest.update(inspect.getsource(sys.modules[module_name]).encode())
    return digest.hexdigest()[:16]


def _rewired(entry: types.FunctionType, allocates: bool) -> tuple[types.FunctionType, list[types.FunctionType]]:
    """A copy of `entry` whose helpers (every function of ours it reaches) are numba dispatchers calling one
    another, and those functions. Every helper is inlined into the entry at numba's IR level: its calls then cost
    nothing and the state arrays' loads and stores are optimised across them (~1.6x on the replay's kernel)."""
    import numba

    functions = _closure(entry)
    namespaces: dict[str, dict[str, Any]] = {}  # one rewired copy of each module's globals
    clones: dict[int, types.FunctionType] = {}
    for fn in functions:
        namespace = namespaces.setdefault(fn.__module__, dict(fn.__globals__))
        clone = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
        clone.__module__, clone.__qualname__ = fn.__module__, fn.__qualname__
        clones[id(fn)] = clone
    helpers = {key: numba.njit(inline="always", _nrt=allocates)(clone)
               for key, clone in clones.items() if key != id(entry)}
    for namespace in namespaces.values():
        for name, value in namespace.items():
            if isinstance(value, types.FunctionType) and id(value) in helpers:
                namespace[name] = helpers[id(value)]
    return clones[id(entry)], functions


def compiled(entry: Callable[..., Any], cache_root: Path = CACHE_ROOT, *,
             allocates: bool = True) -> Callable[..., Any]:
    """The numba-compiled `entry`, calling compiled copies of the functions of ours it uses.

    `allocates=False` (nothing it runs creates an array: they all come from the caller) compiles without
    numba's reference counting, whose atomic increments and decrements around every array handed from one inlined
    helper to the next took three quarters of the replay kernel's time; code that does allocate then fails to
    compile rather than run wrong."""
    import numba
    from numba.core import config as numba_config

    assert isinstance(entry, types.FunctionType)
    flags = () if allocates else ("no refcounts",)  # numba's own cache index does not tell them apart
    saved = numba_config.CACHE_DIR
    numba_config.CACHE_DIR = str(cache_root / source_hash(_closure(entry), *flags))  # read as each dispatcher is made
    try:
        clone, _ = _rewired(entry, allocates)
        return numba.njit(cache=True, _nrt=allocates)(clone)
    finally:
        numba_config.CACHE_DIR = saved


def native(entry: Callable[..., Any], signature: str, cache_root: Path = CACHE_ROOT) -> Callable[..., Any]:
    """`entry` as a function of a native extension module built ahead of time for `signature` (numba's types,
    e.g. "void(i8, f8[::1])"), without reference counting: nothing it runs may create an array (code that does
    fails to build). Built once per source hash, by whichever process first needs it; imported by every other
    without numba. Without a C compiler, the just-in-time `compiled` runs it instead (and says so)."""
    assert isinstance(entry, types.FunctionType)
    digest = source_hash(_closure(entry), "native", signature, _host_cpu())
    name = f"{entry.__name__.strip('_')}_{digest}"  # one module per source: versions never meet in sys.modules
    path = cache_root / digest / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    if not path.is_file():
        if not _can_build_extensions():
            log.warning("no C compiler or Python headers: %s runs just in time instead of natively", entry.__name__)
            return compiled(entry, cache_root, allocates=False)
        _build_native(entry, signature, name, path)
    found = sys.modules.get(name)
    if found is None:
        loader = importlib.machinery.ExtensionFileLoader(name, str(path))
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        assert spec is not None
        found = importlib.util.module_from_spec(spec)
        loader.exec_module(found)
        sys.modules[name] = found
    return _checked(getattr(found, entry.__name__), signature)


# The argument types a native signature may use: numba's name -> numpy's.
_NATIVE_TYPES = {"i8": np.dtype(np.int64), "f8": np.dtype(np.float64), "b1": np.dtype(np.bool_)}
_NATIVE_ARG = re.compile(r"(\w+)(\[[:, ]*1\])?")


def _checked(function: Callable[..., Any], signature: str) -> Callable[..., Any]:
    """`function` refusing arguments other than its signature's: a native module reads whatever memory it is
    handed (a float32 array where it expects float64 is a crash, or worse, wrong numbers), where numba would raise."""
    expected = []
    for token, dims in _NATIVE_ARG.findall(signature[signature.index("(") + 1:-1]):
        if token not in _NATIVE_TYPES:
            raise ValueError(f"native signature type {token!r} not one of {sorted(_NATIVE_TYPES)}")
        expected.append((_NATIVE_TYPES[token], dims.count(":") - 1 if dims else 0))  # "[:, ::1]": 2-D, C order

    def call(*args: Any) -> Any:
        if len(args) != len(expected):
            raise TypeError(f"{function.__name__} takes {len(expected)} arguments, got {len(args)}")
        for k, (arg, (dtype, ndim)) in enumerate(zip(args, expected, strict=True)):
            fits = (isinstance(arg, np.ndarray) and arg.dtype == dtype and arg.ndim == ndim and arg.flags.c_contiguous
                    if ndim else isinstance(arg, int | float | np.generic))
            if not fits:
                raise TypeError(f"{function.__name__} argument {k}: expected {ndim}-D C-contiguous {dtype}, got "
                                f"{getattr(arg, 'dtype', type(arg).__name__)} {getattr(arg, 'shape', '')}")
        return function(*args)

    return call


def _host_cpu() -> str:
    """The machine and its instruction set extensions: a module built for this CPU must never run on another
    (a copied var/ would crash on an instruction the other lacks), so they are part of its key."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()} {flags.strip()}"


def _can_build_extensions() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler) is not None and Path(sysconfig.get_paths()["include"], "Python.h").is_file()


def _build_native(entry: types.FunctionType, signature: str, name: str, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc is "pending deprecation"; numba is pinned, and its tests run it
        from numba.pycc import CC

    clone, _ = _rewired(entry, allocates=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=path.parent))  # concurrent builders each write their own, then rename
    try:
        cc = CC(name, source_module=entry.__module__)
        cc.output_dir = str(build)
        cc.use_nrt = False
        cc.target_cpu = "host"  # as the just-in-time compiler does: built on the machine that runs it
        cc.export(entry.__name__, signature)(clone)
        cc.compile()
        (build / path.name).replace(path)
    finally:
        shutil.rmtree(build, ignore_errors=True)
