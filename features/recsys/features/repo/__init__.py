"""The declarative Feast repository: entities, sources, feature views (see definitions.py)."""
