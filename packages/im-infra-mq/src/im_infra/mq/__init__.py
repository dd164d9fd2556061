"""im_infra.mq: Kafka producer, consumer groups with automatic offset management, and admin, on confluent-kafka."""

__all__: list[str] = []
