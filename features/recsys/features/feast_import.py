"""Feast without typeguard's import-time instrumentation: half of what ``import feast`` costs.

Why: Feast decorates ~20 classes with ``typeguard.typechecked``, and typeguard 4 instruments a decorated class
by re-reading, re-parsing and recompiling the source of its whole module once per decorated method: 242
module parses during ``import feast``, about 5 of its 10.8 s on a 2-core node (``python -X importtime``).
Every process that touches Feast pays it: each ingress replica when it starts (so each scale-up and each
rollout), every ``recsys features`` command, every test that deploys an app. typeguard documents the
decorator as a development aid that is a no-op under ``python -O``; here it is a no-op for Feast always. Its
checks only guard the argument types of Feast's own constructors, which our feature definitions fix.

``RECSYS_FEAST_TYPECHECKS=1`` keeps the checks (when debugging a feature repository). Feast is the only
package in our dependency set that uses typeguard; a process that imported Feast before this ran keeps
whatever it got.
"""

from __future__ import annotations

import os
import sys
from typing import Any

KEEP_ENV = "RECSYS_FEAST_TYPECHECKS"


def _no_instrumentation(target: Any = None, **_options: Any) -> Any:
    """``typeguard.typechecked`` as under ``python -O``: the target itself (also as ``@typechecked(...)``)."""
    return target if target is not None else _no_instrumentation


def skip_feast_typechecks() -> bool:
    """Make ``typeguard.typechecked`` a no-op before Feast binds it; True when it took effect."""
    if os.environ.get(KEEP_ENV) == "1" or "feast" in sys.modules:
        return False
    try:
        import typeguard
    except ImportError:  # no typeguard, nothing to skip
        return False
    typeguard.typechecked = _no_instrumentation
    return True
