"""The serving CLIs: ``recsys serve``, ``recsys recommend``, ``recsys catalog``."""
