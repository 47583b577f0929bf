"""KServe predictor for the ranker: the same TorchScript model behind the V2 open inference protocol.

Lets the ranking stage run as a KServe InferenceService instead of the Serve ``Ranker`` deployment:

    POST /v2/models/<name>/infer
    {"inputs": [{"name": "dense",  "datatype": "FP32",  "shape": [B, F_dense],  "data": [...]},
                {"name": "sparse", "datatype": "INT64", "shape": [B, F_sparse], "data": [...]}]}
    -> {"outputs": [{"name": "scores", "datatype": "FP32", "shape": [B], "data": [...]}]}

Column order is the version's ``feature_spec.json`` (``recsys.serving.pipeline.scoring.inputs.build_ranker_inputs``
builds it). Run standalone: ``python -m recsys.serving.deployments.kserve_predictor --model_store_uri ...``.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from recsys.serving.config import ServingConfig
from recsys.serving.deployments.ranker import RankerCore


class RankerPredictor(kserve.Model):
    def __init__(self, name: str, model_store_uri: str, version: str | None = None, ranking_model: str = "ranker"):
        super().__init__(name)
        self.cfg = ServingConfig(model_store_uri=model_store_uri, ranking_version=version, ranking_model=ranking_model)
        self.core: RankerCore | None = None
        self.version: str | None = None
        self.ready = False

    def load(self) -> bool:
        self.core = RankerCore(self.cfg)
        self.version = self.core.load(self.cfg.ranking_version)
        self.ready = True
        return self.ready

    def _tensor(self, request: InferRequest, name: str, dtype: Any, width: int) -> np.ndarray:
        found = [i for i in request.inputs if i.name == name]
        if not found:
            raise InvalidInput(f"missing input tensor '{name}'")
        try:
            arr = np.asarray(found[0].as_numpy(), dtype=dtype)
        except (ValueError, TypeError) as e:
            raise InvalidInput(f"input '{name}': {e}") from e
        if arr.ndim == 1 and width == 0 and arr.size == 0:
            arr = arr.reshape(0, 0)
        if arr.ndim != 2 or arr.shape[1] != width:
            raise InvalidInput(f"input '{name}' must have shape [batch, {width}], got {list(arr.shape)}")
        return arr

    async def predict(self, payload: InferRequest | dict, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("only the V2 open inference protocol is supported (POST /v2/models/<name>/infer)")
        assert self.core is not None and self.version is not None
        spec = self.core.spec(self.version)
        dense = self._tensor(payload, "dense", np.float32, len(spec.dense))
        sparse = self._tensor(payload, "sparse", np.int64, len(spec.sparse))
        if len(dense) != len(sparse):
            raise InvalidInput(f"'dense' has {len(dense)} rows but 'sparse' has {len(sparse)}")
        scores = self.core.score(dense, sparse, self.version).astype(np.float32)
        out = InferOutput(name="scores", shape=[len(scores)], datatype="FP32")
        out.set_data_from_numpy(scores, binary_data=False)
        return InferResponse(response_id=payload.id or uuid.uuid4().hex, model_name=self.name,
                             model_version=self.version, infer_outputs=[out])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="KServe V2 predictor for the recsys ranker")
    parser.add_argument("--model_name", default="ranker")
    parser.add_argument("--model_store_uri", required=True)
    parser.add_argument("--model_version", default=None)
    parser.add_argument("--http_port", type=int, default=8080)
    args, _ = parser.parse_known_args(argv)
    model = RankerPredictor(args.model_name, args.model_store_uri, args.model_version)
    model.load()
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False).start([model])


if __name__ == "__main__":
    main()
