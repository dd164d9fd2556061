"""The ``kafka.yaml`` document (seed §6) as a pydantic model, and its mapping onto librdkafka.

The model keeps the seed's field names: camelCase (``clientIDPrefix``, ``lingerMs`` ...) as
aliases, snake_case attribute names, ``populate_by_name=True`` so both spellings are accepted. The
SSL keys are snake_case in the seed (``ca_cert_file`` ...) and stay so. Unknown keys are rejected,
so a typo in a document fails with an error naming the field instead of being silently ignored.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from im_infra import coord
from im_infra.mq.errors import ConfigError

__all__ = [
    "BROKERS_ENV",
    "KAFKA",
    "CommonConfig",
    "ConsumerConfig",
    "KafkaConfig",
    "ProducerConfig",
    "RetryTopicsConfig",
    "SASLConfig",
    "SSLConfig",
    "SecurityConfig",
    "admin_properties",
    "client_id",
    "common_properties",
    "consumer_properties",
    "producer_properties",
]

#: Short name of ``IM_INFRA_KAFKA_COMMON__BROKERS`` (comma separated ``host:port`` list); like
#: every environment variable it wins over the documents and loses to keyword overrides.
BROKERS_ENV = "IM_INFRA_KAFKA_BROKERS"

_BROKER_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class SASLConfig(_Model):
    """``common.security.sasl``: an empty mechanism disables SASL."""

    mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    username: str = ""
    password: SecretStr = SecretStr("")

    @property
    def enabled(self) -> bool:
        """Whether SASL authentication is configured."""
        return self.mechanism != ""

    @model_validator(mode="after")
    def _needs_username(self) -> SASLConfig:
        if self.enabled and not self.username:
            raise ValueError(f"sasl.username is required when sasl.mechanism is {self.mechanism!r}")
        return self


class SSLConfig(_Model):
    """``common.security.ssl``: all empty (and no skip-verify) disables TLS."""

    ca_cert_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""
    insecure_skip_verify: bool = False

    @property
    def enabled(self) -> bool:
        """Whether TLS is configured (any file set, or verification explicitly skipped)."""
        return bool(
            self.ca_cert_file
            or self.client_cert_file
            or self.client_key_file
            or self.insecure_skip_verify
        )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> SSLConfig:
        if bool(self.client_cert_file) != bool(self.client_key_file):
            raise ValueError("ssl.client_cert_file and ssl.client_key_file must be set together")
        return self


class SecurityConfig(_Model):
    """``common.security``."""

    sasl: SASLConfig = SASLConfig()
    ssl: SSLConfig = SSLConfig()


class CommonConfig(_Model):
    """``common``: settings shared by producers, consumers and admin clients."""

    brokers: list[str] = Field(default_factory=list)
    """``host:port`` of the bootstrap brokers. No default: a client without brokers is a
    configuration error naming the ways to set them, not a retry loop on placeholder hosts."""
    client_id_prefix: str = Field(default="gochat", alias="clientIDPrefix", min_length=1)
    security: SecurityConfig = SecurityConfig()

    @field_validator("brokers")
    @classmethod
    def _broker_addresses(cls, value: list[str]) -> list[str]:
        for broker in value:
            if not _BROKER_RE.match(broker):
                raise ValueError(f"broker {broker!r} is not host:port")
        return value


class ProducerConfig(_Model):
    """``producer``: defaults for every producer (a service document may override them)."""

    required_acks: Literal[-1, 0, 1] = Field(default=-1, alias="requiredAcks")
    enable_idempotence: bool = Field(default=True, alias="enableIdempotence")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    batch_size: int = Field(default=16384, alias="batchSize", gt=0)
    linger_ms: int = Field(default=5, alias="lingerMs", ge=0)

    @model_validator(mode="after")
    def _idempotence_needs_all_acks(self) -> ProducerConfig:
        if self.enable_idempotence and self.required_acks != -1:
            raise ValueError(
                f"enableIdempotence=true requires requiredAcks=-1 (got {self.required_acks})"
            )
        return self


#: Longest accepted retry-topic delay (a week): a longer one is almost certainly a unit mistake.
MAX_RETRY_DELAY_MS = 7 * 24 * 3600 * 1000


class RetryTopicsConfig(_Model):
    """``consumer.retryTopics``: non-blocking retries (see :mod:`im_infra.mq.retry`).

    A message whose callback failed moves to ``<topic>.retry.<delayMs>`` for each delay in turn,
    then to ``<topic>.dlq`` (``deadLetter``); its partition goes on meanwhile. Empty ``delaysMs``
    (the default) turns retry topics off. Applied live: a change affects later failures.
    """

    delays_ms: tuple[int, ...] = Field(default=(), alias="delaysMs", max_length=20)
    dead_letter: bool = Field(default=True, alias="deadLetter")

    @property
    def enabled(self) -> bool:
        """Whether failing messages go to retry topics."""
        return bool(self.delays_ms)

    @field_validator("delays_ms")
    @classmethod
    def _delays_in_range(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for delay in value:
            if not 1 <= delay <= MAX_RETRY_DELAY_MS:
                raise ValueError(
                    f"retry delay {delay} ms is out of range (1..{MAX_RETRY_DELAY_MS} ms)"
                )
        return value


class ConsumerConfig(_Model):
    """``consumer``: defaults for every consumer group member."""

    auto_commit_interval_ms: int = Field(default=5000, alias="autoCommitIntervalMs", gt=0)
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="latest", alias="autoOffsetReset"
    )
    session_timeout_ms: int = Field(default=30000, alias="sessionTimeoutMs", gt=0)
    heartbeat_interval_ms: int = Field(default=10000, alias="heartbeatIntervalMs", gt=0)
    #: KIP-345 static membership: a restarted member takes its partitions back without a
    #: rebalance. On by default; the id is ``groupInstanceId`` when set, else derived from a
    #: sticky instance ID held in coord (see :mod:`im_infra.mq.membership`).
    static_membership: bool = Field(default=True, alias="staticMembership")
    #: Ordered concurrency: up to this many messages handled at once (threads / asyncio tasks),
    #: one at a time per ``orderBy`` key (see :mod:`im_infra.mq._internal.ordering`).
    concurrency: int = Field(default=1, ge=1, le=1024)
    order_by: Literal["key", "partition"] = Field(default="key", alias="orderBy")
    group_instance_id: str = Field(
        default="", alias="groupInstanceId", max_length=249, pattern=r"^[A-Za-z0-9._-]*$"
    )
    #: Non-blocking retries through delayed topics (applied live).
    retry_topics: RetryTopicsConfig = Field(default=RetryTopicsConfig(), alias="retryTopics")

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> ConsumerConfig:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"heartbeatIntervalMs ({self.heartbeat_interval_ms}) must be lower than "
                f"sessionTimeoutMs ({self.session_timeout_ms}); the seed recommends at most 1/3"
            )
        return self


class KafkaConfig(_Model):
    """The whole ``kafka.yaml`` document (seed §6)."""

    common: CommonConfig = CommonConfig()
    producer: ProducerConfig = ProducerConfig()
    consumer: ConsumerConfig = ConsumerConfig()


KAFKA: coord.Component[KafkaConfig] = coord.Component(
    "kafka",
    KafkaConfig,
    # librdkafka fixes its configuration when a client is created; the retry topics are mq's
    # own and are applied by running consumers (factory.new_consumer).
    live_fields=frozenset({"consumer.retry_topics"}),
    required={"common.brokers": "the keyword argument common={'brokers': ['host:9092']}"},
    env_aliases={BROKERS_ENV: "common.brokers"},
    error=ConfigError,
)
"""The ``kafka.yaml`` component as coord loads it (entry point ``im_infra.config: kafka``)."""


def client_id(config: KafkaConfig, service_name: str) -> str:
    """``<clientIDPrefix>-<serviceName>`` (seed §6)."""
    return f"{config.common.client_id_prefix}-{service_name}"


def common_properties(config: KafkaConfig, service_name: str) -> dict[str, Any]:
    """librdkafka properties shared by every client: brokers, client id, SASL and TLS."""
    common = config.common
    props: dict[str, Any] = {
        "bootstrap.servers": ",".join(common.brokers),
        "client.id": client_id(config, service_name),
    }
    sasl, ssl = common.security.sasl, common.security.ssl
    if sasl.enabled:
        props["security.protocol"] = "SASL_SSL" if ssl.enabled else "SASL_PLAINTEXT"
        props["sasl.mechanisms"] = sasl.mechanism
        props["sasl.username"] = sasl.username
        props["sasl.password"] = sasl.password.get_secret_value()
    elif ssl.enabled:
        props["security.protocol"] = "SSL"
    if ssl.enabled:
        if ssl.ca_cert_file:
            props["ssl.ca.location"] = ssl.ca_cert_file
        if ssl.client_cert_file:
            props["ssl.certificate.location"] = ssl.client_cert_file
            props["ssl.key.location"] = ssl.client_key_file
        if ssl.insecure_skip_verify:
            props["enable.ssl.certificate.verification"] = False
            props["ssl.endpoint.identification.algorithm"] = "none"
    return props


def producer_properties(config: KafkaConfig, service_name: str) -> dict[str, Any]:
    """librdkafka producer properties for ``config``."""
    p = config.producer
    props = common_properties(config, service_name)
    props.update(
        {
            "acks": p.required_acks,
            "enable.idempotence": p.enable_idempotence,
            "compression.type": p.compression,
            "batch.size": p.batch_size,
            "linger.ms": p.linger_ms,
        }
    )
    return props


def consumer_properties(config: KafkaConfig, service_name: str, group_id: str) -> dict[str, Any]:
    """librdkafka consumer properties: at-least-once (offsets stored only after the callback)."""
    c = config.consumer
    props = common_properties(config, service_name)
    props.update(
        {
            "group.id": group_id,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": c.auto_commit_interval_ms,
            # The consumer stores an offset itself once the callback returned: a crash while
            # handling a message can never commit past it.
            "enable.auto.offset.store": False,
            "auto.offset.reset": c.auto_offset_reset,
            "session.timeout.ms": c.session_timeout_ms,
            "heartbeat.interval.ms": c.heartbeat_interval_ms,
        }
    )
    if c.static_membership and c.group_instance_id:
        props["group.instance.id"] = c.group_instance_id
    return props


def admin_properties(config: KafkaConfig, service_name: str) -> dict[str, Any]:
    """librdkafka admin client properties."""
    return common_properties(config, service_name)
