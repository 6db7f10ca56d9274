"""Bearer tokens: who may send usage, kept in one place that can carry a scope.

Tokens come from a variable (`[intake] tokens_env`, comma- or newline-separated) and/or a file
(`[intake] tokens_file`, one per line, `#` comments), several at once so keys can rotate. Each
token has a `Principal`; today every token's scope is `("write", "*")` — it may send usage for
anyone. The planned read API adds tokens scoped to one owner (`("read", "team:team-eng")`) by
extending the file's line format (`TOKEN scope`), not by a second mechanism.

Tokens are compared in constant time and never logged, counted or echoed.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a stable, non-secret name and what it may do."""

    name: str  # "token-1", ... in the order given; safe to log
    action: str = "write"
    owner: str = "*"

    def may(self, action: str) -> bool:
        return self.action == action


ANONYMOUS = Principal("anonymous")


class Tokens:
    """The accepted bearer tokens. `allow_unauthenticated` lets requests without a token in."""

    def __init__(self, tokens: list[str], allow_unauthenticated: bool = False) -> None:
        self._tokens = [(t.encode(), Principal(f"token-{i + 1}")) for i, t in enumerate(tokens)]
        self.allow_unauthenticated = allow_unauthenticated

    @classmethod
    def load(cls, env_name: str = "", file: str = "", allow_unauthenticated: bool = False,
             env: dict[str, str] | None = None) -> Tokens:  # fmt: skip
        """Raises ValueError naming the variable or file (never a token) when one is unusable."""
        env = dict(os.environ) if env is None else env
        found: list[str] = []
        if env_name:
            if not env.get(env_name, "").strip():
                raise ValueError(f"[intake] tokens_env: the variable {env_name} is not set or empty")
            found += [t.strip() for t in env[env_name].replace("\n", ",").split(",") if t.strip()]
        if file:
            try:
                text = Path(file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"[intake] tokens_file: cannot read {file} ({exc.strerror})") from None
            lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
            found += [ln.split()[0] for ln in lines if ln]
            if not any(ln for ln in lines):
                raise ValueError(f"[intake] tokens_file: {file} holds no token")
        return cls(found, allow_unauthenticated)

    def __len__(self) -> int:
        return len(self._tokens)

    def check(self, authorization: str | None) -> Principal | None:
        """The principal for an `Authorization` header value, or None (answer 401)."""
        if not authorization:
            return ANONYMOUS if self.allow_unauthenticated else None
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        raw = given.strip().encode()
        match = None
        for token, principal in self._tokens:  # every token compared: the time says nothing
            if hmac.compare_digest(raw, token):
                match = principal
        return match


__all__ = ["ANONYMOUS", "Principal", "Tokens"]
