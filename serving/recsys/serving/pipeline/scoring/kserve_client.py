"""The ranking stage over HTTP: a client of the KServe V2 ranker predictor (``kserve_predictor.py``).

With ``ranker_endpoint`` set in the serving config, the ingress scores candidates by calling
``POST {ranker_endpoint}/v2/models/{ranker_model_name}/infer`` instead of the in-graph ``Ranker``
deployment (which is then not deployed). The client has the deployment's methods
(``score``/``load``/``retain``), so the pipeline calls it like any other stage target.

Versions: a predictor serves the one version it was started with. ``score`` names the version the
request wants; when the predictor answers with another one the call fails, and the pipeline
answers by retrieval score, flagged ``ranker_unavailable``, rather than reporting a ranking
version that did not score the items.
"""

from __future__ import annotations

import numpy as np


class RankerEndpointError(RuntimeError):
    """The predictor answered, but not with scores of the wanted version and shape."""


class KServeRankerClient:
    """Async V2 (open inference protocol, JSON) client; one connection pool per ingress replica."""

    def __init__(self, endpoint: str, model_name: str = "ranker", timeout_s: float = 2.0):
        import httpx

        self.base = endpoint.rstrip("/")
        self.model_name = model_name
        self.url = f"{self.base}/v2/models/{model_name}/infer"
        self._client = httpx.AsyncClient(timeout=timeout_s,
                                          limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))

    async def load(self, version: str | None) -> str | None:
        """Nothing to load on this side: the predictor holds its model (a mismatch shows up in ``score``)."""
        return version

    async def retain(self, versions: list[str]) -> list[str]:
        return list(versions)

    async def score(self, dense: np.ndarray, sparse: np.ndarray, version: str) -> np.ndarray:
        dense = np.ascontiguousarray(dense, np.float32)
        sparse = np.ascontiguousarray(sparse, np.int64)
        body = {"inputs": [
            {"name": "dense", "datatype": "FP32", "shape": list(dense.shape), "data": dense.ravel().tolist()},
            {"name": "sparse", "datatype": "INT64", "shape": list(sparse.shape), "data": sparse.ravel().tolist()},
        ]}
        r = await self._client.post(self.url, json=body)
        if r.status_code != 200:
            raise RankerEndpointError(f"{self.url} answered {r.status_code}: {r.text[:200]}")
        out = r.json()
        served = out.get("model_version")
        if served is not None and version is not None and str(served) != str(version):
            raise RankerEndpointError(f"predictor serves ranker version {served}, the request wants {version}")
        scores = np.asarray(out["outputs"][0]["data"], np.float32)
        if len(scores) != len(dense):
            raise RankerEndpointError(f"predictor returned {len(scores)} scores for {len(dense)} rows")
        return scores

    async def aclose(self) -> None:
        await self._client.aclose()
