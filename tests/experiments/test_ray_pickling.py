"""The router and the log travel into Ray workers (as Serve replicas will hold them) and behave the same."""

from __future__ import annotations

import yaml

from recsys.experiments import ExperimentRouter, ExposureLog, read_log


def test_router_and_log_work_inside_a_ray_worker(ray_cluster, tmp_path, ab_experiment):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"holdout": {"percent": 10}, "experiments": [ab_experiment("e")]}))
    router = ExperimentRouter.from_file(path)
    log = ExposureLog(tmp_path / "log")
    units = [f"user-{i}" for i in range(300)]

    @ray_cluster.remote
    def serve_requests(router, log, units):
        out = []
        for unit in units:
            a = router.assign_primary(unit)
            log.log_assignment(unit, a, request_id=f"r-{unit}", items=[1, 2, 3])
            out.append((a.experiment, a.variant))
        log.close()
        return out

    remote = ray_cluster.get(serve_requests.remote(router, log, units), timeout=120)
    local = [(a.experiment, a.variant) for a in map(router.assign_primary, units)]
    assert remote == local
    frames = read_log(tmp_path / "log")
    assert sorted(frames.exposures["unit_id"]) == sorted(units)
    held_out = set(frames.exposures.loc[frames.exposures["is_holdout"], "experiment"])
    assert held_out == {"holdout"}, held_out  # 10 % of 300 units: the holdout is there, and only it is marked
