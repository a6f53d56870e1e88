"""Per-user request rate limit (README "Security"), counted by the `limits` library.

Counters live in settings.rate_limit_storage_url: `async+memory://` counts per replica (N replicas let a
user through N times over); `async+redis://host:6379` (install `limits[async-redis]`) shares them.
The concurrent-runs limit is counted in PostgreSQL by RunStore.create, so it is shared already.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from ..errors import TooManyRequests
from .core.metrics import Metrics


class UserRateLimit:
    def __init__(self, spec: str, storage_url: str, metrics: Metrics) -> None:
        # Empty spec: no limit. A bad one was already refused by the settings' validator.
        self.items: list[RateLimitItem] = parse_many(spec) if spec.strip() else []
        storage = storage_from_string(storage_url)
        if not isinstance(storage, Storage):
            raise ValueError("RATE_LIMIT_STORAGE_URL must name an async storage, e.g. async+memory://")
        # The sliding window counter is exact enough, keeps two counters per user and limit, and is
        # supported by every storage `limits` has (memory, Redis, Memcached, MongoDB).
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.metrics = metrics

    async def hit(self, user: str) -> None:
        """Count one request of `user`; 429 with the seconds until the window lets one through."""
        for item in self.items:
            if not await self.limiter.hit(item, "user", user):
                reset_at, _ = await self.limiter.get_window_stats(item, "user", user)
                self.metrics.user_limit_rejections.labels("requests").inc()
                raise TooManyRequests(
                    f"request rate over {item} for this user", retry_after=math.ceil(reset_at - time.time())
                )
