"""Ranking: DeepFM-style model over feature-store features + retrieval score, its Ray Train job,
the feature sources it reads, and the retrieval -> ranker pipeline used by evaluation."""
