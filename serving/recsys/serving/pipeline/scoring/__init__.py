"""Scoring stage: the ranker's inputs, the remote ranker (Serve or KServe) and the fallback order."""
