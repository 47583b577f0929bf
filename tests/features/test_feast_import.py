"""Feast is imported without typeguard's import-time instrumentation (5 of 10.8 s per process on 2 cores)."""

from __future__ import annotations

import subprocess
import sys

PROBE = ("import recsys.features.online, feast.data_source as d; "
         "print(sorted(n for n in d.KafkaSource.__init__.__code__.co_names if n.startswith('typeguard')))")


def _instrumented_names(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_feast_classes_are_not_instrumented_in_a_fresh_process():
    import os

    from recsys.features.feast_import import KEEP_ENV

    env = {k: v for k, v in os.environ.items() if k != KEEP_ENV}
    assert _instrumented_names(env) == "[]"  # Feast's constructors run as written


def test_the_env_switch_keeps_typeguard_and_without_it_the_decorator_is_replaced(monkeypatch):
    """As before Feast's first import (this test process may have imported it already: that alone returns False)."""
    import typeguard

    from recsys.features.feast_import import KEEP_ENV, _no_instrumentation, skip_feast_typechecks

    original = typeguard.typechecked
    monkeypatch.delitem(sys.modules, "feast", raising=False)
    monkeypatch.setattr(typeguard, "typechecked", original)  # restored after the test
    monkeypatch.setenv(KEEP_ENV, "1")
    assert skip_feast_typechecks() is False and typeguard.typechecked is original
    monkeypatch.delenv(KEEP_ENV)
    assert skip_feast_typechecks() is True and typeguard.typechecked is _no_instrumentation


def test_the_no_op_decorator_returns_its_target_in_both_forms():
    from recsys.features.feast_import import _no_instrumentation

    class A:
        pass

    assert _no_instrumentation(A) is A
    assert _no_instrumentation(forward_ref_policy=None)(A) is A
