"""Value types returned by the admin client."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TopicInfo"]


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """What :meth:`AdminClient.describe_topic` reports about a topic."""

    name: str
    partitions: int
    replication_factor: int
