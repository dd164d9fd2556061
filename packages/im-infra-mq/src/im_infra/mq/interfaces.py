"""Deprecated: renamed :mod:`im_infra.mq.protocols` (docs/naming.md); removed in 0.2.0."""

import warnings

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

__all__ = [
    "AdminClient",
    "AsyncConsumeCallback",
    "AsyncConsumer",
    "AsyncProducer",
    "ConsumeCallback",
    "Consumer",
    "DeliveryCallback",
    "Producer",
]

warnings.warn(
    "im_infra.mq.interfaces is deprecated and will be removed in 0.2.0; use im_infra.mq.protocols "
    "(or the same names from im_infra.mq)",
    DeprecationWarning,
    stacklevel=2,
)
