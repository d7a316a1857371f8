"""Dagster wiring: definitions, resources, sensors, jobs, schedules."""
