"""Factory functions (seed §3): configuration from coord, dependencies as keyword arguments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from im_infra import clog
from im_infra import coord as _coord

from .admin import KafkaAdminClient
from .aio import AsyncKafkaConsumer, AsyncKafkaProducer
from .config import (
    KAFKA,
    KafkaConfig,
    admin_properties,
    consumer_properties,
    producer_properties,
)
from .consumer import KafkaConsumer
from .errors import ConfigError
from .membership import claim_static_member
from .producer import KafkaProducer
from .retry import RetryPolicy

__all__ = [
    "load_config",
    "new_admin_client",
    "new_async_consumer",
    "new_async_producer",
    "new_consumer",
    "new_producer",
]

RdkafkaConfig = Mapping[str, Any]


def load_config(
    service_name: str, *, coord: _coord.Provider | None = None, **overrides: Any
) -> KafkaConfig:
    """Resolve ``kafka.yaml`` for ``service_name`` the way every factory does (one read).

    Sources and precedence are coord's (docs/configuration.md): defaults < global
    ``kafka.yaml`` < the service's ``kafka.yaml`` (etcd through ``coord`` or the default
    provider; ``$IM_INFRA_CONFIG_DIR`` when etcd is unreachable) < environment
    (``IM_INFRA_KAFKA_BROKERS``, ``IM_INFRA_KAFKA_<SECTION>__<FIELD>``) < ``overrides`` (nested
    like the document: ``producer={"lingerMs": 0}``; snake_case keys work too). Raises
    :class:`ConfigError` naming the field and the problem, or naming the ways to set the
    brokers when nothing sets them.
    """
    return _coord.load_component_config(
        KAFKA, service=service_name, coord=coord, overrides=overrides or None
    )


def _live(
    service_name: str | None, coord: _coord.Provider | None, overrides: Mapping[str, Any]
) -> _coord.LiveConfig[KafkaConfig]:
    """The live view a client follows: librdkafka's configuration is fixed at creation, so a
    change is logged once as needing a restart, except ``consumer.retryTopics`` (consumers
    apply it, see :func:`new_consumer`)."""
    return _coord.live_config(KAFKA, service_name, coord=coord, overrides=overrides or None)


def _merge(props: dict[str, Any], extra: RdkafkaConfig | None) -> dict[str, Any]:
    if extra:
        for key in extra:
            if not isinstance(key, str) or ("." not in key and not key.endswith("_cb")):
                raise ConfigError(
                    f"rdkafka_config key {key!r} is not a librdkafka property (like 'linger.ms')"
                )
        props.update(extra)
    return props


def new_producer(
    service_name: str | None = None,
    *,
    logger: clog.Logger | None = None,
    coord: _coord.Provider | None = None,
    rdkafka_config: RdkafkaConfig | None = None,
    backpressure_timeout: float = 30.0,
    close_timeout: float = 30.0,
    **overrides: Any,
) -> KafkaProducer:
    """Create a producer for ``service_name`` (client id ``<clientIDPrefix>-<service_name>``).

    ``overrides`` are deep-merged over the kafka.yaml documents (see :func:`load_config`);
    ``rdkafka_config`` sets raw librdkafka properties last (e.g. ``{"message.timeout.ms": 5000}``).
    """
    live = _live(service_name, coord, overrides)
    config, service_name = live.value, live.service
    props = _merge(producer_properties(config, service_name), rdkafka_config)
    producer = KafkaProducer(
        props,
        logger=logger,
        backpressure_timeout=backpressure_timeout,
        close_timeout=close_timeout,
    )
    live.close_with(producer)
    return producer


def new_consumer(
    service_name: str | None = None,
    group_id: str = "",
    *,
    logger: clog.Logger | None = None,
    coord: _coord.Provider | None = None,
    retry: RetryPolicy | None = None,
    rdkafka_config: RdkafkaConfig | None = None,
    close_timeout: float = 30.0,
    **overrides: Any,
) -> KafkaConsumer:
    """Create a member of consumer group ``group_id`` for ``service_name``.

    Without ``retry`` a failing callback is logged and skipped (the seed's behaviour); with a
    :class:`RetryPolicy` it is retried and, if it keeps failing, sent to ``<topic>.dlq``.
    ``consumer.retryTopics`` (kafka.yaml, followed live) adds non-blocking retries through
    delayed retry topics (docs/mq.md).
    """
    if not group_id:
        raise ConfigError("group_id must be a non-empty string")
    live = _live(service_name, coord, overrides)
    config, service_name = live.value, live.service
    props = _merge(consumer_properties(config, service_name, group_id), rdkafka_config)
    member = None
    if config.consumer.static_membership and "group.instance.id" not in props:
        log = (logger or clog.get_logger("mq")).named("membership")
        member = claim_static_member(service_name, group_id, coord, log)
        if member is not None:
            props["group.instance.id"] = member.instance_id

    def dlq_producer() -> KafkaProducer:
        return KafkaProducer(producer_properties(config, service_name), logger=logger)

    def admin() -> KafkaAdminClient:
        return KafkaAdminClient(admin_properties(config, service_name), logger=logger)

    try:
        consumer = KafkaConsumer(
            props,
            logger=logger,
            retry=retry,
            dlq_producer=dlq_producer,
            close_timeout=close_timeout,
            on_closed=None if member is None else member.release,
            concurrency=config.consumer.concurrency,
            order_by=config.consumer.order_by,
            retry_topics=config.consumer.retry_topics,
            admin=admin,
        )
    except BaseException:
        if member is not None:
            member.release()
        raise

    def apply(old: KafkaConfig, new: KafkaConfig) -> None:
        if new.consumer.retry_topics != old.consumer.retry_topics:
            consumer.set_retry_topics(new.consumer.retry_topics)

    live.on_change(apply)
    live.close_with(consumer)
    return consumer


def new_admin_client(
    service_name: str | None = None,
    *,
    logger: clog.Logger | None = None,
    coord: _coord.Provider | None = None,
    rdkafka_config: RdkafkaConfig | None = None,
    timeout: float = 30.0,
    **overrides: Any,
) -> KafkaAdminClient:
    """Create an admin client for topic management (seed §5)."""
    live = _live(service_name, coord, overrides)
    config, service_name = live.value, live.service
    live.close()  # an admin client reads the document once
    props = _merge(admin_properties(config, service_name), rdkafka_config)
    return KafkaAdminClient(props, logger=logger, timeout=timeout)


def new_async_producer(
    service_name: str | None = None,
    *,
    logger: clog.Logger | None = None,
    coord: _coord.Provider | None = None,
    rdkafka_config: RdkafkaConfig | None = None,
    backpressure_timeout: float = 30.0,
    close_timeout: float = 30.0,
    **overrides: Any,
) -> AsyncKafkaProducer:
    """The asyncio form of :func:`new_producer`."""
    return AsyncKafkaProducer(
        new_producer(
            service_name,
            logger=logger,
            coord=coord,
            rdkafka_config=rdkafka_config,
            backpressure_timeout=backpressure_timeout,
            close_timeout=close_timeout,
            **overrides,
        )
    )


def new_async_consumer(
    service_name: str | None = None,
    group_id: str = "",
    *,
    logger: clog.Logger | None = None,
    coord: _coord.Provider | None = None,
    retry: RetryPolicy | None = None,
    rdkafka_config: RdkafkaConfig | None = None,
    close_timeout: float = 30.0,
    **overrides: Any,
) -> AsyncKafkaConsumer:
    """The asyncio form of :func:`new_consumer`."""
    return AsyncKafkaConsumer(
        new_consumer(
            service_name,
            group_id,
            logger=logger,
            coord=coord,
            retry=retry,
            rdkafka_config=rdkafka_config,
            close_timeout=close_timeout,
            **overrides,
        )
    )
