"""Ray Serve deployments (ingress, retrieval shard, ranker) and the KServe predictor: one module per deployment."""
