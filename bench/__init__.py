"""Benchmarks of the platform on the local stack (``make bench``); see README, Benchmarks."""
