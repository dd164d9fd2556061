"""The base of the db.yaml models and the secret field type (shared by their modules)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr
from pydantic.alias_generators import to_camel


def as_text(value: object) -> object:
    """Scalars → str, so a secret written as a YAML number validates instead of being echoed
    back in a validation error message."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Secret = Annotated[SecretStr, BeforeValidator(as_text)]


class Model(BaseModel):
    """camelCase keys (snake_case accepted), unknown keys refused, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )
