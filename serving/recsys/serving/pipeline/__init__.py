"""The per-request recommendation pipeline.

The service composing the stages, and one folder per stage holding the stage and its algorithms.
"""
