"""When to retry a request to an API endpoint, how long to wait, and how fast to send.

Which HTTP statuses stop a run or are retried, the ``Retry-After`` hint, exponential backoff with
jitter, and the client-side rate limiter (requests and tokens per minute) used by
:func:`attribution.distill.endpoint.collect_from_endpoint`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import random
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .endpoint import EndpointOptions


#: HTTP statuses that stop the run at once: the key or the model name is wrong, retrying cannot help.
FATAL_STATUSES = {401: "unauthorized (bad or missing API key)", 403: "forbidden (the key may not use this model)",
                  404: "not found (unknown model name or wrong URL path)"}


#: HTTP statuses worth retrying; any 5xx is retried too.
RETRY_STATUSES = {408, 409, 425, 429}
#: The longest wait a ``Retry-After`` header can ask before one retry (seconds): a server asking for more is
#: retried after this long (and said so on stderr), not after hours.
RETRY_AFTER_MAX_S = 60.0


def retry_after(err: BaseException) -> float | None:
    """Seconds from a ``Retry-After`` / ``retry-after-ms`` header of an HTTP error, if any."""
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    with contextlib.suppress(TypeError, ValueError):
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    return None


def backoff_delay(attempt: int, options: EndpointOptions, hinted: float | None = None,
                  rng: random.Random | None = None) -> float:
    """Wait before retry ``attempt`` (0-based): the server's hint if any, else exponential with jitter.

    Without a hint: a uniform draw in [d/2, d] with d = min(backoff_max, backoff_base * 2**attempt),
    so concurrent workers do not retry in lockstep. A hint, capped at :data:`RETRY_AFTER_MAX_S`, gets a
    little jitter on top (up to 10%).
    """
    draw: Any = rng or random  # the module's shared generator unless the caller brings one
    if hinted is not None:
        return min(hinted, RETRY_AFTER_MAX_S) * (1 + 0.1 * draw.random())
    ceiling = min(options.backoff_max, options.backoff_base * 2 ** attempt)
    return ceiling / 2 + draw.random() * ceiling / 2


class RateLimiter:
    """Client-side limits: requests per minute (evenly spaced) and tokens per minute (60 s window).

    A request reserves an estimate (prompt characters / 4 + max_tokens) that is corrected to the
    reported usage once it returns.
    """

    def __init__(self, rpm: float = 0.0, tpm: float = 0.0, clock: Any = time.monotonic) -> None:
        self.rpm, self.tpm, self.clock = rpm, tpm, clock
        self._next_start = 0.0
        self._window: collections.deque[list[float]] = collections.deque()
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: float) -> list[float]:
        entry = [0.0, float(tokens)]
        if not self.rpm and not self.tpm:
            return entry
        async with self._lock:
            while True:
                now = self.clock()
                while self._window and self._window[0][0] <= now - 60:
                    self._window.popleft()
                wait = self._next_start - now if self.rpm else 0.0
                if self.tpm and self._window and sum(e[1] for e in self._window) + tokens > self.tpm:
                    wait = max(wait, self._window[0][0] + 60 - now)
                if wait <= 0:
                    break
                await asyncio.sleep(min(wait, 1.0))  # re-checked each second
            entry[0] = now
            if self.rpm:
                self._next_start = max(now, self._next_start) + 60.0 / self.rpm
            if self.tpm:
                self._window.append(entry)
        return entry

    @staticmethod
    def settle(entry: list[float], tokens: float) -> None:
        entry[1] = float(tokens)


def classify_error(err: BaseException) -> tuple[str, int | None]:
    """``("fatal"|"retry"|"fail", status)`` for an exception raised by a request."""
    import openai

    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        if status in FATAL_STATUSES:
            return "fatal", status
        if status in RETRY_STATUSES or status >= 500:
            return "retry", status
        return "fail", status
    if isinstance(err, (openai.APIConnectionError, openai.APIResponseValidationError, asyncio.TimeoutError,
                        ConnectionError)):
        return "retry", None
    return "fail", None
