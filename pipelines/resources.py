"""Dagster resources: the platform's settings and clients, chosen per deployment by the
environment (the same variables the API reads; see README)."""

from dagster import ConfigurableResource

from auditlog.queue import EventQueue
from auditlog.settings import Settings


class AuditPlatform(ConfigurableResource):
    """Settings and clients for the platform's servers.

    Every value comes from the environment at run time (``Settings.from_env``), so the same
    definitions run on the local stack, in CI and on AWS.
    """

    def settings(self) -> Settings:
        return Settings.from_env()

    def queue(self) -> EventQueue:
        return EventQueue.from_settings(self.settings())
