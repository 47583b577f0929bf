"""Exploration stage and its policies (Thompson sampling, LinUCB)."""
