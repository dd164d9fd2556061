"""Deprecated: renamed :mod:`im_infra.mq.factory` (docs/naming.md); removed in 0.2.0."""

import warnings

from .factory import (
    load_config,
    new_admin_client,
    new_async_consumer,
    new_async_producer,
    new_consumer,
    new_producer,
)

__all__ = [
    "load_config",
    "new_admin_client",
    "new_async_consumer",
    "new_async_producer",
    "new_consumer",
    "new_producer",
]

warnings.warn(
    "im_infra.mq.factories is deprecated and will be removed in 0.2.0; use im_infra.mq.factory "
    "(or the same names from im_infra.mq)",
    DeprecationWarning,
    stacklevel=2,
)
