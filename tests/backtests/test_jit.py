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
from trading.core import fsm, greeks, rules
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


def test_the_cache_key_covers_the_modules_whose_constants_are_compiled_in(monkeypatch):
    functions = jit._closure(fast._kernel)
    before = jit.source_hash(functions)
    assert "trading.core.fsm" in jit._modules_reached(functions)  # TRADING_NEXT is built from its table
    real = inspect.getsource

    def edited(module):
        text = real(module)
        return text + "\n# an edit\n" if module is fsm else text

    monkeypatch.setattr(inspect, "getsource", edited)

    assert jit.source_hash(functions) != before


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
    with pytest.raises(TypeError, match="argument 0: expected 1-D C-contiguous float64, got float32"):
        fills(np.zeros(3, np.float32), 1.0)  # a native module would read it as float64: wrong numbers or a crash
    with pytest.raises(TypeError, match="argument 0"):
        fills(np.zeros((3, 2))[:, 0], 1.0)  # not contiguous
    with pytest.raises(TypeError, match="takes 2 arguments"):
        fills(out)


def test_code_that_allocates_is_refused_when_built_without_refcounts_not_run(tmp_path):
    with pytest.raises(NumbaError, match="zeros"):
        jit.native(_allocates, "f8[::1](i8)", tmp_path)
    with pytest.raises(NumbaError, match="zeros"):
        jit.compiled(_allocates, tmp_path, allocates=False)(3)
    assert list(jit.compiled(_allocates, tmp_path)(3)) == [0.0] * 3
    functions = jit._closure(fast._kernel)
    assert jit.source_hash(functions) != jit.source_hash(functions, "no refcounts")  # never one another's cache


def test_without_a_c_compiler_a_native_function_runs_just_in_time_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(jit, "_can_build_extensions", lambda: False)

    fills = jit.native(_fills, "void(f8[::1], f8)", tmp_path)
    out = np.zeros(2)
    fills(out, 1.0)

    assert list(out) == [2.0, 2.0]
    assert "runs just in time" in caplog.text
    assert not list(tmp_path.rglob("*.so"))


def test_a_native_module_is_kept_per_cpu_and_never_loaded_on_another(tmp_path, monkeypatch):
    jit.native(_fills, "void(f8[::1], f8)", tmp_path)
    monkeypatch.setattr(jit, "_host_cpu", lambda: "x86_64 flags: an older cpu without avx2")

    fills = jit.native(_fills, "void(f8[::1], f8)", tmp_path)  # built again for this one, not loaded

    out = np.zeros(1)
    fills(out, 0.0)
    assert out[0] == 1.0
    assert len(list(tmp_path.rglob("*.so"))) == 2
