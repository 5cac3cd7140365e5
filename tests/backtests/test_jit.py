"""The fast replay compiles the engine's own rules, and its machine code cache can never outlive their source."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
from numba.core.errors import NumbaError

from backtests import fast, jit
from trading.core import fsm, greeks, rules


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


def test_the_kernel_runs_without_refcounts_and_code_that_allocates_there_is_refused_not_run(tmp_path):
    assert fast.compiled_kernel().targetoptions["_nrt"] is False  # three quarters of its time went on refcounts
    functions = jit._closure(fast._kernel)
    assert jit.source_hash(functions) != jit.source_hash(functions, "no refcounts")  # never one another's cache

    with pytest.raises(NumbaError, match="zeros"):
        jit.compiled(_allocates, tmp_path, allocates=False)(3)
    assert list(jit.compiled(_allocates, tmp_path)(3)) == [0.0] * 3
