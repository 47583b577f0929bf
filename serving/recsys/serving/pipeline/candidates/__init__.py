"""Candidate generation stage and its sources (sharded ANN, item-kNN, popularity, SASRec, content index)."""
