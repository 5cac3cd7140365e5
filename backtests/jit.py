"""Compile plain Python functions, and every function of ours they call, with numba: how the fast replay runs the
engine's own rules (`trading.core.rules`, `trading.core.greeks`) instead of a copy of them.

Both ways follow the global names each function uses to the functions of `trading.core` and `backtests` it calls,
compile each once, and wire the compiled copies to call one another (numba cannot call a Python function). The
originals are untouched: the engine keeps calling them as Python.
- `native(entry, signature)`: ahead of time, into a native extension module (numba's pycc and the C compiler). A
  process that finds it built imports it without loading numba at all: numba's import, its typing registries and
  the scipy.linalg it pulls in cost a backtest 0.5-1 s of start-up. The replay kernel runs this way.
- `compiled(entry)`: numba's own just-in-time dispatcher, typed at the first call (tests, benchmarks, and the
  kernel on a machine that cannot build a native module).

The machine code is kept on disk under a hash of the code it was compiled from, as loaded, and of every constant it
reads, plus the numba, numpy and Python versions: change any rule and the cache moves, so stale code never runs.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import os
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


def _global_names(code: types.CodeType) -> set[str]:
    """The names `code` may read from its globals, nested code objects (comprehensions) included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _closure(entry: types.FunctionType) -> list[types.FunctionType]:
    """`entry` and every function of ours it reaches through its global names, in discovery order."""
    found: dict[int, types.FunctionType] = {}
    todo = [entry]
    while todo:
        fn = todo.pop()
        if id(fn) in found:
            continue
        found[id(fn)] = fn
        todo += [v for name in _global_names(fn.__code__) if _ours(v := fn.__globals__.get(name))]
    return list(found.values())


def _value_digest(value: object) -> bytes:
    """A value as compiled in, the same in every process: an array by its bytes, a function or module by its name
    (a function of ours is hashed by its own code), a set in sorted order (string hashes vary between processes)."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{value.shape}".encode() + value.tobytes()
    if isinstance(value, types.ModuleType):
        return value.__name__.encode()
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}".encode()
    if isinstance(value, set | frozenset):
        return repr(sorted(repr(v) for v in value)).encode()
    return repr(value).encode()


def _code_digest(code: types.CodeType) -> bytes:
    """Bytecode, names and constants (nested code too), without line numbers: what runs, not where it was written."""
    parts = [code.co_code, repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
                                 code.co_argcount, code.co_kwonlyargcount, code.co_flags)).encode()]
    parts += [_code_digest(c) if isinstance(c, types.CodeType) else _value_digest(c) for c in code.co_consts]
    return b"\0".join(parts)


def code_hash(functions: list[types.FunctionType], *flags: str) -> str:
    """The key of the machine code compiled from `functions`: their code as this process loaded it (not their
    files: a worker whose files changed under it must not file its old code under the new source's key), the value
    of every global name they read (the transition array built from `fsm`, the reason bits), and the versions of
    numba, numpy and Python."""
    digest = hashlib.sha256(f"numba {version('numba')} numpy {version('numpy')} python {sys.version} {flags}".encode())
    for fn in sorted(functions, key=lambda f: (f.__module__, f.__qualname__)):
        digest.update(f"{fn.__module__}.{fn.__qualname__} {fn.__defaults__!r}".encode())
        digest.update(_code_digest(fn.__code__))
        for name in sorted(_global_names(fn.__code__)):
            if name in fn.__globals__:
                digest.update(name.encode() + b"=" + _value_digest(fn.__globals__[name]))
    return digest.hexdigest()[:16]


def _rewired(entry: types.FunctionType, allocates: bool) -> types.FunctionType:
    """A copy of `entry` whose helpers (every function of ours it reaches) are numba dispatchers calling one
    another. Every helper is inlined into the entry at numba's IR level: its calls then cost
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
    return clones[id(entry)]


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
    numba_config.CACHE_DIR = str(cache_root / code_hash(_closure(entry), *flags))  # read as each dispatcher is made
    try:
        return numba.njit(cache=True, _nrt=allocates)(_rewired(entry, allocates))
    finally:
        numba_config.CACHE_DIR = saved


def native(entry: Callable[..., Any], signature: str, cache_root: Path = CACHE_ROOT) -> Callable[..., Any]:
    """`entry` as a function of a native extension module built ahead of time for `signature` (numba's types,
    e.g. "void(i8, f8[::1])"), without reference counting: nothing it runs may create an array (code that does
    fails to build). Built once per code hash, by whichever process first needs it; imported by every other
    without numba. A module that does not load (a file cut short) is built again once. Where none can be built
    (no C compiler, no Python headers, a build that fails), the just-in-time `compiled` runs it instead, and says
    so; code numba refuses is refused either way."""
    assert isinstance(entry, types.FunctionType)
    arguments = _arguments(signature)
    digest = code_hash(_closure(entry), "native", signature, platform.machine())
    name = f"{entry.__name__.strip('_')}_{digest}"  # one module per code hash: versions never meet in sys.modules
    path = cache_root / digest / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    for attempt in ("first", "again"):
        if not path.is_file() and not _built(entry, signature, name, path):
            break
        try:
            return _checked(getattr(_load(name, path), entry.__name__), arguments)
        except ImportError as exc:
            log.warning("native %s does not load (%s): %s", entry.__name__, exc,
                        "building it again" if attempt == "first" else "running it just in time")
            path.unlink(missing_ok=True)
    return compiled(entry, cache_root, allocates=False)


def _built(entry: types.FunctionType, signature: str, name: str, path: Path) -> bool:
    """Builds the module at `path`; False (and a warning) when this machine cannot."""
    if not _can_build_extensions():
        log.warning("no C compiler or Python headers: %s runs just in time instead of natively", entry.__name__)
        return False
    try:
        _build_native(entry, signature, name, path)
    except Exception as exc:  # noqa: BLE001  (the toolchain's errors have no common class)
        from numba.core.errors import NumbaError

        if isinstance(exc, NumbaError):  # the code is wrong, not the machine: the just-in-time build refuses it too
            raise
        log.warning("cannot build native %s (%s: %s): it runs just in time", entry.__name__, type(exc).__name__, exc)
        return False
    return True


def _load(name: str, path: Path) -> types.ModuleType:
    found = sys.modules.get(name)
    if found is None:
        loader = importlib.machinery.ExtensionFileLoader(name, str(path))
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        assert spec is not None
        found = importlib.util.module_from_spec(spec)
        loader.exec_module(found)
        sys.modules[name] = found
    return found


# The types a native signature may use: numba's name -> numpy's dtype, and the Python scalars each takes (an int
# is no float's business to truncate, nor a bool an int's).
_NATIVE_TYPES = {"i8": np.dtype(np.int64), "f8": np.dtype(np.float64), "b1": np.dtype(np.bool_)}
_NATIVE_SCALARS: dict[str, tuple[type, ...]] = {"i8": (int, np.integer), "f8": (float, int, np.floating, np.integer),
                                                "b1": (bool, np.bool_)}
_NATIVE_ARG = re.compile(r"(\w+)(\[[^\]]*\])?")
_C_ORDER = re.compile(r"\[(:, )*::1\]")  # [::1], [:, ::1], ...: C-contiguous, the only layout run_fast hands over


def _arguments(signature: str) -> list[tuple[str, int]]:
    """A native signature's arguments as (type, dimensions); a type or layout it cannot check is refused."""
    arguments = []
    for token, dims in _NATIVE_ARG.findall(signature[signature.index("(") + 1:-1]):
        if token not in _NATIVE_TYPES:
            raise ValueError(f"native signature type {token!r} not one of {sorted(_NATIVE_TYPES)}")
        if dims and not _C_ORDER.fullmatch(dims):
            raise ValueError(f"native signature layout {token}{dims}: only C-contiguous arrays ([::1], [:, ::1])")
        arguments.append((token, dims.count(":") - 1 if dims else 0))
    return arguments


def _checked(function: Callable[..., Any], expected: list[tuple[str, int]]) -> Callable[..., Any]:
    """`function` refusing arguments other than its signature's: a native module reads whatever memory it is
    handed (a float32 array where it expects float64 is a crash, or worse, wrong numbers), where numba would raise.
    (Read-only arrays pass: inputs may be memory-mapped datasets; the caller owns what it lets be written.)"""

    def call(*args: Any) -> Any:
        if len(args) != len(expected):
            raise TypeError(f"{function.__name__} takes {len(expected)} arguments, got {len(args)}")
        for k, (arg, (token, ndim)) in enumerate(zip(args, expected, strict=True)):
            if ndim:
                fits = (isinstance(arg, np.ndarray) and arg.dtype == _NATIVE_TYPES[token] and arg.ndim == ndim
                        and arg.flags.c_contiguous and arg.flags.aligned)
                want = f"{ndim}-D C-contiguous aligned {_NATIVE_TYPES[token]}"
            else:
                fits = isinstance(arg, _NATIVE_SCALARS[token]) and (token == "b1" or not isinstance(arg, bool | np.bool_))
                want = f"a {_NATIVE_TYPES[token]} scalar"
            if not fits:
                raise TypeError(f"{function.__name__} argument {k}: expected {want}, got "
                                f"{getattr(arg, 'dtype', type(arg).__name__)} {getattr(arg, 'shape', '')}")
        return function(*args)

    return call


def _can_build_extensions() -> bool:
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]  # as distutils picks it
    return shutil.which(compiler) is not None and Path(sysconfig.get_paths()["include"], "Python.h").is_file()


def _build_native(entry: types.FunctionType, signature: str, name: str, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycc is "pending deprecation"; numba is pinned, and its tests run it
        from numba.pycc import CC

    clone = _rewired(entry, allocates=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=path.parent))  # concurrent builders each write their own, then rename
    try:
        cc = CC(name, source_module=entry.__module__)
        cc.output_dir = str(build)
        cc.use_nrt = False
        # pycc's default target, the architecture's baseline CPU: as fast here as the host's own model, and it runs
        # wherever var/ is copied or a virtual machine hides some of the model's instructions.
        cc.export(entry.__name__, signature)(clone)
        cc.compile()
        (build / path.name).replace(path)
    finally:
        shutil.rmtree(build, ignore_errors=True)
