"""Baselines that bench/ compares the platform against, run on the same servers."""
