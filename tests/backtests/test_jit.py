"""The fast replay compiles the engine's own rules, and its machine code cache can never outlive their source."""
from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
from numba.core.errors import NumbaError

from backtests import fast, jit
from tests.backtests.conftest import REPO
from trading.core import greeks, rules
from trading.core.rules import mid_price


def test_the_fast_loop_runs_the_rules_of_trading_core_and_defines_no_decision_of_its_own():
    functions = jit._closure(fast._kernel)

    by_module = {}
    for fn in functions:
        by_module.setdefault(fn.__module__, set()).add(fn.__name__)
    assert {"size_hedge", "is_force", "standing_mask", "hedge_mask", "delta_class", "trading_trigger",
            "decision_trigger", "loss_halts", "is_healthy", "book_trade", "unrealized_usd", "intrinsic_value",
            "commission_usd", "touch_price", "mid_price"} <= by_module["trading.core.rules"]
    assert {"bs_scalar", "years_to"} <= by_module["trading.core.greeks"]
    # The loop and its state-array helpers, nothing else: a new decision belongs in trading.core.rules.
    assert by_module["backtests.fast"] == {"_kernel", "_row", "_evaluate", "_fill", "_option_quote", "_leg_price",
                                           "_ledger_total", "_day_index", "_roll_day", "_is_open", "_gate_mask",
                                           "_mark", "_step"}
    assert set(by_module) == {"backtests.fast", "trading.core.rules", "trading.core.greeks"}


def test_the_cache_key_covers_the_loaded_code_and_the_constants_compiled_in(monkeypatch):
    functions = jit._closure(fast._kernel)
    before = jit.code_hash(functions)
    assert jit.code_hash(jit._closure(fast._kernel)) == before  # the same in every process and every call

    changed = fast.TRADING_NEXT.copy()
    changed[0, 0] = 99
    monkeypatch.setattr(fast, "TRADING_NEXT", changed)  # the loop's transition table, built from another fsm
    assert jit.code_hash(functions) != before
    monkeypatch.undo()

    monkeypatch.setattr(rules.mid_price, "__code__", rules.touch_price.__code__)  # a rule's code changed
    assert jit.code_hash(functions) != before
    monkeypatch.undo()

    monkeypatch.setattr(inspect, "getsource", lambda obj: "# the file, edited after this process loaded it")
    assert jit.code_hash(functions) == before  # what was loaded is what compiles, so that is the key


def test_a_compiled_rule_gives_the_python_answer():
    compiled = jit.compiled(rules.size_hedge)

    assert compiled(-1234.4, 0.0, 500.0, 2000.0) == rules.size_hedge(-1234.4, 0.0, 500.0, 2000.0) == (1234.0, 500.0)
    assert jit.compiled(greeks.years_to)(86_400.0 * 365.0, 0.0) == 1.0


def _allocates(n: int) -> np.ndarray:
    return np.zeros(n)


def _fills(out: np.ndarray, value: float) -> None:
    for i in range(out.shape[0]):
        out[i] = mid_price(value, value + 2.0)


def test_the_kernel_is_native_and_a_warm_process_runs_it_without_numba():
    fast.compiled_kernel()  # built here if this source has not been yet
    probe = ("import sys; from backtests import fast; fast.compiled_kernel(); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite', 'scipy')))")

    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # numba, its typing registries and scipy.linalg: 0.5-1 s of start-up


def test_a_native_function_computes_with_the_rules_it_calls_and_refuses_arguments_of_other_types(tmp_path):
    fills = jit.native(_fills, "void(f8[::1], f8)", tmp_path)
    out = np.zeros(3)

    fills(out, 99.0)

    assert list(out) == [100.0] * 3
    with pytest.raises(TypeError, match="argument 0: expected 1-D C-contiguous aligned float64, got float32"):
        fills(np.zeros(3, np.float32), 1.0)  # a native module would read it as float64: wrong numbers or a crash
    with pytest.raises(TypeError, match="argument 0"):
        fills(np.zeros((3, 2))[:, 0], 1.0)  # not contiguous
    with pytest.raises(TypeError, match="argument 0"):
        fills(np.zeros(25, np.uint8)[1:].view(np.float64), 1.0)  # misaligned
    with pytest.raises(TypeError, match="argument 1: expected a float64 scalar, got bool"):
        fills(out, True)
    with pytest.raises(TypeError, match="takes 2 arguments"):
        fills(out)
    with pytest.raises(ValueError, match="only C-contiguous arrays"):
        jit.native(_fills, "void(f8[:], f8)", tmp_path)  # refused before anything is built


def test_code_that_allocates_is_refused_when_built_without_refcounts_not_run(tmp_path):
    with pytest.raises(NumbaError, match="zeros"):
        jit.native(_allocates, "f8[::1](i8)", tmp_path)
    with pytest.raises(NumbaError, match="zeros"):
        jit.compiled(_allocates, tmp_path, allocates=False)(3)
    assert list(jit.compiled(_allocates, tmp_path)(3)) == [0.0] * 3
    functions = jit._closure(fast._kernel)
    assert jit.code_hash(functions) != jit.code_hash(functions, "no refcounts")  # never one another's cache


def test_without_a_c_compiler_a_native_function_runs_just_in_time_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(jit, "_can_build_extensions", lambda: False)

    fills = jit.native(_fills, "void(f8[::1], f8)", tmp_path)
    out = np.zeros(2)
    fills(out, 1.0)

    assert list(out) == [2.0, 2.0]
    assert "runs just in time" in caplog.text
    assert not list(tmp_path.rglob("*.so"))


def test_a_native_module_is_kept_per_architecture_and_never_loaded_on_another(tmp_path, monkeypatch):
    jit.native(_fills, "void(f8[::1], f8)", tmp_path)
    monkeypatch.setattr(jit.platform, "machine", lambda: "aarch64")

    fills = jit.native(_fills, "void(f8[::1], f8)", tmp_path)  # built again for this one, not loaded

    out = np.zeros(1)
    fills(out, 0.0)
    assert out[0] == 1.0
    assert len(list(tmp_path.rglob("*.so"))) == 2


def test_a_native_module_that_does_not_load_is_built_again(tmp_path):
    jit.native(_fills, "void(f8[::1], f8)", tmp_path)
    [built] = tmp_path.rglob("*.so")
    built.write_bytes(built.read_bytes()[:100])  # a disk that filled up under an older build
    probe = (f"import numpy as np; from backtests import jit; from tests.backtests.test_jit import _fills; "
             f"f = jit.native(_fills, 'void(f8[::1], f8)', __import__('pathlib').Path({str(tmp_path)!r})); "
             f"out = np.zeros(1); f(out, 1.0); print(out[0])")

    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2.0"
    assert "does not load" in done.stderr and "building it again" in done.stderr
    assert built.stat().st_size > 100_000


def test_a_build_the_toolchain_fails_runs_just_in_time_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CC", "/bin/false")  # a compiler that fails every file

    fills = jit.native(_fills, "void(f8[::1], f8)", tmp_path)
    out = np.zeros(1)
    fills(out, 3.0)

    assert out[0] == 4.0
    assert "cannot build native _fills" in caplog.text
    assert not list(tmp_path.rglob("*.so"))
