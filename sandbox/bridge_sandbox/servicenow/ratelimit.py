"""Inbound REST API rate limits: per-hour rules for one user, users with a role, or everyone,
optionally only for one method and route pattern.

Precedence as the instance applies it: a single-user rule beats role rules, which beat
all-users rules; among rules of the same kind the one allowing the fewest requests wins.
Windows are clock hours of the sandbox clock; ``X-RateLimit-Reset`` is the next hour.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge_sandbox.servicenow.store import ServiceNowApiError, new_sys_id
from bridge_sandbox.serving import Clock

_HOUR = 3600
_API_NAMES = (
    ("/api/now/v1/batch", "Batch API"),
    ("/api/now/batch", "Batch API"),
    ("/api/now/awa", "AWA API"),
)


@dataclass
class RateLimitRule:
    """A ``sys_rate_limit_rules`` record.

    ``user`` (a sys_user sys_id) makes it a single-user rule, ``role`` a users-with-role
    rule, neither an all-users rule. ``path`` is a regular expression searched in the
    request path; ``method`` restricts it to one HTTP method.
    """

    limit: int
    user: str | None = None
    role: str | None = None
    method: str | None = None
    path: str = ".*"
    sys_id: str = field(default_factory=new_sys_id)
    _regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError("limit must be >= 0")
        self._regex = re.compile(self.path)

    @property
    def rank(self) -> int:
        return 0 if self.user else 1 if self.role else 2

    def applies(self, method: str, path: str, user: str, roles: set[str]) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self.user and self.user != user:
            return False
        if self.role and self.role not in roles:
            return False
        return bool(self._regex.search(path))


@dataclass(frozen=True)
class Verdict:
    """The rule applied to one request and the headers to answer with."""

    rule: RateLimitRule
    headers: dict[str, str]


def api_name(path: str) -> str:
    for prefix, name in _API_NAMES:
        if path.startswith(prefix):
            return name
    return "Table API"


class RateLimits:
    """The rules and per-(rule, user) counts of the current hour."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._rules: list[RateLimitRule] = []
        self._counts: Counter[tuple[str, str]] = Counter()
        self._window = -1
        self._lock = threading.Lock()

    def add(self, rule: RateLimitRule) -> RateLimitRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def rules(self) -> list[RateLimitRule]:
        with self._lock:
            return list(self._rules)

    def clear(self) -> None:
        """Remove every rule and every count."""
        with self._lock:
            self._rules.clear()
            self._counts.clear()

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def check(
        self, method: str, path: str, user: str, roles: Callable[[], set[str]]
    ) -> Verdict | None:
        """Count the request against the rule that applies; ServiceNowApiError 429 (with
        its headers on ``exc.headers``) when over the limit; None when no rule applies."""
        with self._lock:
            if not self._rules:
                return None
            rule = self._pick(method, path, user, roles())
            if rule is None:
                return None
            now = self.clock.timestamp()
            window = int(now // _HOUR)
            if window != self._window:
                self._window = window
                self._counts.clear()
            key = (rule.sys_id, user)
            self._counts[key] += 1
            reset_at = (window + 1) * _HOUR
            headers = {
                "X-RateLimit-Limit": str(rule.limit),
                "X-RateLimit-Reset": str(reset_at),
                "X-RateLimit-Rule": rule.sys_id,
            }
            if self._counts[key] > rule.limit:
                headers["Retry-After"] = str(max(1, int(reset_at - now)))
                raise RateLimitExceeded(rule, api_name(path), headers)
            return Verdict(rule, headers)

    def _pick(self, method: str, path: str, user: str, roles: set[str]) -> RateLimitRule | None:
        matching = [r for r in self._rules if r.applies(method, path, user, roles)]
        if not matching:
            return None
        return min(matching, key=lambda r: (r.rank, r.limit))


class RateLimitExceeded(ServiceNowApiError):
    def __init__(self, rule: RateLimitRule, api: str, headers: dict[str, str]) -> None:
        super().__init__(
            429,
            "Rate limit exceeded",
            f"Rate limit of {rule.limit} requests per hour for {api} exceeded",
        )
        self.headers = headers
