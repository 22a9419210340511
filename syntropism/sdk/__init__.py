"""The Python agent SDK: a typed client for the System Service. ``from syntropism.sdk import SystemService``."""

from syntropism.sdk.client import ServiceError, SystemService

__all__ = ["ServiceError", "SystemService"]
