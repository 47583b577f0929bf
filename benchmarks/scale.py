"""Cost curves of the offline pipeline: seconds and peak memory per stage at several data scales.

Each stage runs the real CLI in a subprocess (as an operator would) against scale x the default
synthetic data (6k users x 4k items x 1M events at 1x); a sampler thread records the peak RSS of
the stage's driver process and, separately, the peak summed RSS of its descendants (the Ray
raylet and workers it started). Then, per stage, the fitted growth exponent: the least-squares slope
of log(seconds) and log(driver peak RSS) against log(events).

    python benchmarks/scale.py --scales 1,4        # ~15 min on 2 cores
    python benchmarks/scale.py --scales 1,4,16     # the README table
    python benchmarks/scale.py --scales 1,4,16 --workdir W --stages "train baselines"   # re-time one stage
                                                   # on the data an earlier run left in W
    python benchmarks/scale.py --scales 1,4 --eval-max-users 6000   # evaluate a fixed, seeded 6k-user sample

Evaluate scores every catalog item for every evaluated user, so its work is users x items: 16x for 4x
data (time exponent ~1.6-2 against events). ``--eval-max-users N`` passes ``recsys evaluate --max-users N``
(a seeded sample; at or above the evaluated users it changes nothing, so 6000 keeps the 1x figures) and
bounds that to N x items, linear in the catalog. Default: every user, as before.

Stages: generate -> features build -> features apply + materialize -> train baselines
(popularity, item_knn, als, bpr; EASE refuses catalogs above 12k items, see ease_max_items) ->
train retrieval (two-tower, 1 epoch, Ray Train) -> evaluate (every promoted model). Needs Redis
(``--redis-url``, default db 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

BASE = {"users": 6_000, "items": 4_000, "events": 1_000_000}


def run_stage(cmd: list[str], env: dict) -> tuple[float, float, float]:
    """(seconds, driver peak RSS GiB, descendants' peak summed RSS GiB) of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"driver": 0, "children": 0}
    done = threading.Event()

    def sample() -> None:
        p = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak["driver"] = max(peak["driver"], p.memory_info().rss)
                kids = sum(c.memory_info().rss for c in p.children(recursive=True))
                peak["children"] = max(peak["children"], kids)
            except psutil.Error:
                pass
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    done.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return time.perf_counter() - t0, peak["driver"] / 2**30, peak["children"] / 2**30


def stages(recsys: str, scale: float, eval_max_users: int | None = None) -> list[tuple[str, list[list[str]]]]:
    n = {k: str(int(v * scale)) for k, v in BASE.items()}
    evaluate = [recsys, "evaluate", *(["--max-users", str(eval_max_users)] if eval_max_users else [])]
    return [
        ("generate", [[recsys, "data", "generate", "--users", n["users"], "--items", n["items"],
                       "--events", n["events"]]]),
        ("features build", [[recsys, "features", "build"]]),
        ("materialize", [[recsys, "features", "apply"], [recsys, "features", "materialize"]]),
        ("train baselines", [[recsys, "train", "baselines", "--models", "popularity,item_knn,als,bpr", "--promote"]]),
        ("train two-tower", [[recsys, "train", "retrieval", "--epochs", "1", "--promote"]]),
        # the same job with sparse id-table gradients + row-wise Adam (a step touches its batch's rows only);
        # not promoted, so evaluate still scores the default model
        ("train two-tower (sparse)", [[recsys, "train", "retrieval", "--epochs", "1", "--sparse-embeddings"]]),
        ("evaluate", [evaluate]),
    ]


def model_seconds(root: Path, stage: str) -> str:
    """Each baseline's own fit seconds (its newest version's metadata), so a stage's curve can be split."""
    if stage != "train baselines":
        return ""
    parts = []
    for model in ("popularity", "item_knn", "als", "bpr"):
        metas = sorted((root / "models" / model).glob("*/metadata.json"))
        if metas:
            secs = json.loads(metas[-1].read_text()).get("params", {}).get("train_seconds")
            if secs is not None:
                parts.append(f"{model} {float(secs):.1f}")
    return f"  ({', '.join(parts)} s)" if parts else ""


def slope(x: list[float], y: list[float]) -> float:
    if len(x) < 2:
        return float("nan")
    return float(np.polyfit(np.log(x), np.log(np.maximum(y, 1e-9)), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", default="1,4", help="Comma-separated multiples of the default data.")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    ap.add_argument("--workdir", type=Path, default=None, help="Default: a temporary directory.")
    ap.add_argument("--eval-max-users", type=int, default=None,
                    help="Evaluate a seeded sample of this many users (default: all; 6000 = every user at 1x).")
    ap.add_argument("--stages", default=None,
                    help="Comma-separated stage names to run (default: all). Without 'generate' (and the stages "
                         "before the ones named) --workdir must hold an earlier run's data at every scale.")
    args = ap.parse_args()
    if args.stages and args.workdir is None:
        ap.error("--stages needs --workdir (the earlier run's data)")
    only = set(args.stages.split(",")) if args.stages else None
    scales = [float(s) for s in args.scales.split(",")]
    recsys = str(Path(os.environ.get("VIRTUAL_ENV", ".venv")) / "bin" / "recsys")
    if not Path(recsys).exists():
        recsys = "recsys"
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in scales:
            root = (args.workdir or Path(tmp)) / f"x{scale:g}"
            env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RECSYS_REDIS_URL": args.redis_url,
                   "RECSYS_DATA_DIR": str(root / "data"), "RECSYS_FEATURE_REPO_DIR": str(root / "features"),
                   "RECSYS_MODEL_STORE_URI": str(root / "models"), "RECSYS_LOG_DIR": str(root / "logs")}
            for name, cmds in stages(recsys, scale, args.eval_max_users):
                if only is not None and name not in only:
                    continue
                total, driver, children = 0.0, 0.0, 0.0
                for cmd in cmds:
                    s, d, c = run_stage(cmd, env)
                    total, driver, children = total + s, max(driver, d), max(children, c)
                rows.setdefault(name, []).append((scale, total, driver, children))
                print(f"{scale:>4g}x {name:<16} {total:>8.1f} s  driver {driver:5.2f} GiB  "
                      f"ray/children {children:5.2f} GiB{model_seconds(root, name)}", flush=True)
    events = {s: BASE["events"] * s for s in scales}
    print(f"\n{'stage':<16} " + " ".join(f"{f'{s:g}x s':>8} {f'{s:g}x GiB':>8}" for s in scales)
          + f" {'time exp':>8} {'mem exp':>8}")
    for name, vals in rows.items():
        xs = [events[v[0]] for v in vals]
        cells = " ".join(f"{v[1]:>8.1f} {v[2]:>8.2f}" for v in vals)
        t_exp, m_exp = slope(xs, [v[1] for v in vals]), slope(xs, [v[2] for v in vals])
        print(f"{name:<16} {cells} {t_exp:>8.2f} {m_exp:>8.2f}" if not math.isnan(t_exp) else f"{name:<16} {cells}")


if __name__ == "__main__":
    main()
