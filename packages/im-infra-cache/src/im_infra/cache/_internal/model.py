"""The pydantic base every ``redis.yaml`` model shares (camelCase aliases, no unknown fields)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from im_infra.coord import Duration

Seconds = Annotated[Duration, Field(gt=0)]
"""Positive seconds; also Go duration strings such as ``"500ms"`` (:func:`coord.parse_duration`)."""


class Model(BaseModel):
    """Frozen, camelCase aliases (snake_case accepted too), unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )
