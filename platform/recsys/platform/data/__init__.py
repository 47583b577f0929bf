"""Datasets: schema, synthetic generator, MovieLens loaders, time-based splits."""

from recsys.platform.data.schema import EVENT_TYPES, Dataset, DatasetError
from recsys.platform.data.split import Split, split_events

__all__ = ["EVENT_TYPES", "Dataset", "DatasetError", "Split", "split_events"]
