"""Dagster asset definitions of the platform."""
