"""Thompson slot: shown share vs logged marginal propensity per class of items (docs/experiments.md).

The scenario of tests/serving/test_exploration_propensity.py (1,000 new items, half filtered out, 3 clicked,
2 groups of never-clicked items), run through the real exploration stage with a fixed posterior state.
Usage: python benchmarks/thompson_slot_propensity.py [DECISIONS]
"""
import asyncio
import sys

import numpy as np

sys.path.insert(0, ".")
from recsys.serving.config import ServingConfig  # noqa: E402
from recsys.serving.pipeline.exploration.stage import Exploration  # noqa: E402
from recsys.serving.pipeline.metrics import ServingMetrics  # noqa: E402
from tests.serving.test_exploration_propensity import _catalog, _decisions, _explorer  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
stage = Exploration(ServingConfig(exploration_rate=1.0, exploration_slot=2), _catalog(), ServingMetrics())
ex, classes = _explorer()
shown = asyncio.run(_decisions(stage, ex, n))
size = {c: sum(1 for k in classes.values() if k == c) for c in set(classes.values())}
print("| class | items | shown share | logged propensity x items (mean) |")
print("|---|---:|---:|---:|")
for c in sorted(size):
    ps = [p for i, p in shown if classes[i] == c]
    print(f"| {c} | {size[c]} | {len(ps) / n:.4f} | {size[c] * np.mean(ps):.4f} |")
