"""Topic administration (seed §5 ``AdminClient``) on confluent-kafka's AdminClient."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient as _RdkAdminClient
from confluent_kafka.cimpl import NewTopic

from im_infra import clog
from im_infra.clog.lifecycle import Closing

from ._internal.client import AuthFailure, build_client
from ._internal.validate import check_topic
from .admin_types import TopicInfo
from .errors import AdminError, AdminTimeoutError, TopicExistsError, TopicNotFoundError

__all__ = ["KafkaAdminClient"]


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


class KafkaAdminClient(Closing):
    """Topic administration; build it with :func:`~im_infra.mq.new_admin_client`."""

    def __init__(
        self,
        properties: Mapping[str, Any],
        *,
        logger: clog.Logger | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Create the client from ready librdkafka ``properties``."""
        self._log = (logger or clog.get_logger("mq")).named("admin")
        self._timeout = timeout
        # librdkafka's log lines go to stdlib logging (so clog) like the other clients'; an
        # admin client has no poller thread, so they are served while waiting for each
        # operation and after it (confluent-kafka-python#1734).
        self._auth = AuthFailure()
        self._admin, self._properties = build_client(
            _RdkAdminClient, "admin", properties, self._log, auth=self._auth
        )
        self._closed = False

    @property
    def properties(self) -> dict[str, Any]:
        """The librdkafka properties in use, secrets masked."""
        return dict(self._properties)

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1) -> None:
        """Create topic ``name``.

        An existing topic with the same partition count is accepted (idempotent); one with a
        different count raises :class:`TopicExistsError` naming both counts.
        """
        self._check_open()
        check_topic(name, "name")
        if (
            type(partitions) is not int
            or type(replication_factor) is not int
            or partitions < 1
            or replication_factor < 1
        ):
            raise AdminError(
                f"topic {name!r}: partitions ({partitions}) and replication_factor "
                f"({replication_factor}) must be >= 1"
            )
        topic = NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
        future = self._admin.create_topics([topic], operation_timeout=self._timeout)[name]
        try:
            self._wait(future, f"create topic {name!r}")
        except KafkaException as exc:
            err = _kafka_error(exc)
            if err is None or err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise AdminError(f"cannot create topic {name!r}: {exc}") from exc
            existing = self.describe_topic(name)
            if existing.partitions != partitions:
                raise TopicExistsError(
                    f"topic {name!r} already exists with {existing.partitions} partitions, "
                    f"not the {partitions} requested"
                ) from exc
            return
        self._log.info("topic created", topic=name, partitions=partitions)

    def delete_topic(self, name: str) -> None:
        """Delete topic ``name``; :class:`TopicNotFoundError` when it does not exist."""
        self._check_open()
        check_topic(name, "name")
        future = self._admin.delete_topics([name], operation_timeout=self._timeout)[name]
        try:
            self._wait(future, f"delete topic {name!r}")
        except KafkaException as exc:
            err = _kafka_error(exc)
            if err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicNotFoundError(f"topic {name!r} does not exist") from exc
            raise AdminError(f"cannot delete topic {name!r}: {exc}") from exc
        self._log.info("topic deleted", topic=name)

    def list_topics(self) -> list[str]:
        """Names of all topics except internal ones (``__consumer_offsets`` ...), sorted."""
        metadata = self._metadata()
        return sorted(t for t in metadata.topics if not t.startswith("__"))

    def describe_topic(self, name: str) -> TopicInfo:
        """Partition count and replication factor of ``name``."""
        check_topic(name, "name")
        metadata = self._metadata()
        topic = metadata.topics.get(name)
        if topic is None:
            raise TopicNotFoundError(f"topic {name!r} does not exist")
        if topic.error is not None:
            if topic.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicNotFoundError(f"topic {name!r} does not exist")
            raise AdminError(f"cannot describe topic {name!r}: {topic.error.str()}")
        replicas = max((len(p.replicas) for p in topic.partitions.values()), default=0)
        return TopicInfo(name=name, partitions=len(topic.partitions), replication_factor=replicas)

    def close(self) -> None:
        """Release the client (serving its last log lines first). Idempotent."""
        if not self._closed:
            self._closed = True
            self._serve_logs()

    def _check_open(self) -> None:
        if self._closed:
            raise AdminError("the admin client is closed")

    def _metadata(self) -> Any:
        self._check_open()
        try:
            # Whole-cluster metadata: asking for one topic could auto-create it on some brokers.
            metadata = self._admin.list_topics(timeout=self._timeout)
        except KafkaException as exc:
            self._serve_logs()  # error_cb reports (an authentication refusal) come with poll
            what = "cannot read cluster metadata"
            refused = self._auth.error(what)
            if refused is not None:
                raise refused from exc
            err = _kafka_error(exc)
            if err is not None and err.code() == KafkaError._TIMED_OUT:
                raise AdminTimeoutError(f"{what}: no answer within {self._timeout:.1f}s") from exc
            raise AdminError(f"{what}: {exc}") from exc
        finally:
            self._serve_logs()
        self._auth.reason = None  # the broker answered: any earlier refusal is over
        return metadata

    def _wait(self, future: Future[Any], what: str) -> Any:
        """The future's result, serving librdkafka's log lines while waiting."""
        deadline = time.monotonic() + self._timeout
        while not future.done() and time.monotonic() < deadline:
            self._admin.poll(0.05)
        self._serve_logs()
        try:
            result = future.result(timeout=max(deadline - time.monotonic(), 0.0))
        except (KafkaException, concurrent.futures.TimeoutError) as exc:
            refused = self._auth.error(what)
            if refused is not None:
                raise refused from exc
            if isinstance(exc, concurrent.futures.TimeoutError):
                raise AdminTimeoutError(
                    f"{what}: the broker did not answer within {self._timeout:.1f}s"
                ) from None
            raise
        self._auth.reason = None
        return result

    def _serve_logs(self) -> None:
        self._admin.poll(0)
