"""Moved to ``eventbus.complaints`` (the REST API uses it too); kept so old imports work."""
from eventbus.complaints import Complaints

__all__ = ["Complaints"]
