"""im_infra.mq: Kafka producer, consumer groups with automatic offset management, and admin.

Built on confluent-kafka (librdkafka); configuration is the ``kafka.yaml`` document from coord::

    from im_infra import mq

    with mq.new_producer("im-gateway") as producer:
        producer.send_sync(mq.Message(topic="gochat.messages.upstream", key=b"u1", value=b"hi"))
"""

from im_infra.coord.deprecation import deprecated_names

from .admin import KafkaAdminClient
from .admin_types import TopicInfo
from .aio import AsyncKafkaConsumer, AsyncKafkaProducer
from .batch import AsyncBatchCallback, BatchCallback, BatchFailure, message_trace
from .config import (
    BROKERS_ENV,
    KAFKA,
    CommonConfig,
    ConsumerConfig,
    KafkaConfig,
    ProducerConfig,
    RetryTopicsConfig,
    SASLConfig,
    SecurityConfig,
    SSLConfig,
    admin_properties,
    client_id,
    consumer_properties,
    producer_properties,
)
from .consumer import KafkaConsumer
from .dead_letter import DeadLetter, read_dead_letter
from .errors import (
    AdminError,
    AdminTimeoutError,
    AuthenticationError,
    ConfigError,
    ConsumerError,
    DeliveryError,
    InvalidArgumentError,
    MQError,
    ProducerClosedError,
    QueueFullError,
    SendTimeoutError,
    TopicExistsError,
    TopicNotFoundError,
)
from .factory import (
    load_config,
    new_admin_client,
    new_async_consumer,
    new_async_producer,
    new_consumer,
    new_producer,
)
from .message import TRACE_ID_HEADER, Message
from .producer import KafkaProducer
from .protocols import (
    AdminClient,
    AsyncConsumeCallback,
    AsyncConsumer,
    AsyncProducer,
    ConsumeCallback,
    Consumer,
    DeliveryCallback,
    Producer,
)
from .retry import DLQ_SUFFIX, RETRY_INFIX, RetryPolicy, retry_source, retry_topic

__all__ = [
    "BROKERS_ENV",
    "DLQ_SUFFIX",
    "KAFKA",
    "RETRY_INFIX",
    "TRACE_ID_HEADER",
    "AdminClient",
    "AdminError",
    "AdminTimeoutError",
    "AsyncBatchCallback",
    "AsyncConsumeCallback",
    "AsyncConsumer",
    "AsyncKafkaConsumer",
    "AsyncKafkaProducer",
    "AsyncProducer",
    "AuthenticationError",
    "BatchCallback",
    "BatchFailure",
    "CommonConfig",
    "ConfigError",
    "ConsumeCallback",
    "Consumer",
    "ConsumerConfig",
    "ConsumerError",
    "DeadLetter",
    "DeliveryCallback",
    "DeliveryError",
    "InvalidArgumentError",
    "KafkaAdminClient",
    "KafkaConfig",
    "KafkaConsumer",
    "KafkaProducer",
    "MQError",
    "Message",
    "Producer",
    "ProducerClosedError",
    "ProducerConfig",
    "QueueFullError",
    "RetryPolicy",
    "RetryTopicsConfig",
    "SASLConfig",
    "SSLConfig",
    "SecurityConfig",
    "SendTimeoutError",
    "TopicExistsError",
    "TopicInfo",
    "TopicNotFoundError",
    "admin_properties",
    "client_id",
    "consumer_properties",
    "load_config",
    "message_trace",
    "new_admin_client",
    "new_async_consumer",
    "new_async_producer",
    "new_consumer",
    "new_producer",
    "producer_properties",
    "read_dead_letter",
    "retry_source",
    "retry_topic",
]

__getattr__ = deprecated_names(
    __name__,
    {"KafkaAsyncConsumer": "AsyncKafkaConsumer", "KafkaAsyncProducer": "AsyncKafkaProducer"},
    "0.2.0",
)
