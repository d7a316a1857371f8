"""The shared core of the audit log platform.

No web framework or Dagster imports live here: the API (``api``), the Dagster assets
(``assets``) and the wiring (``pipelines``) all build on this package.
"""
