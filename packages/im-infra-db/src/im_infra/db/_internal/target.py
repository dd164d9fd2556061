"""What a provider talks to, for error messages and log fields (never the password)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """The database server a provider connects to."""

    backend: str
    host: str | None
    port: int | None
    database: str | None
    user: str | None
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def server(self) -> str:
        """``"postgresql 127.0.0.1:5432"``, or ``"sqlite /path/file.db"``."""
        if self.backend == "sqlite":
            return f"sqlite {self.database or ':memory:'}"
        where = self.host or "localhost"
        if self.port:
            where = f"{where}:{self.port}"
        return f"{self.backend} {where}"

    def scrub(self, text: str) -> str:
        """Replace every secret (the password) that occurs in ``text`` with ``***``."""
        for secret in self.secrets:
            if secret and secret in text:
                text = text.replace(secret, "***")
        return text

    def leaks(self, text: str) -> bool:
        """Whether ``text`` contains a secret."""
        return any(secret and secret in text for secret in self.secrets)
