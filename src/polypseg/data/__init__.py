"""Datasets: finding image/mask pairs, validating them, grouping frames, splitting and caching."""

from polypseg.data.layouts import Dataset, Pair, discover, resolve_data

__all__ = ["Dataset", "Pair", "discover", "resolve_data"]
