"""Retries: the backoff policy, and what becomes of a batch attempt that failed (pure).

The runner asks ``after_failure`` what to do with a failed attempt; the answer
depends only on the error, the attempt number, the policy and whether the run
is stopping, so every rule is tested without a cluster.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from . import config
from .errors import is_transient

__all__ = ["RetryPolicy", "Failure", "Verdict", "Next", "after_failure"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, for transient failures only.

    Examples
    --------
    >>> policy = RetryPolicy(attempts=3, base=0.5, cap=30.0)
    >>> 0 <= policy.delay(2) <= 1.0
    True
    """

    attempts: int = field(default_factory=lambda: int(config.get("retry.attempts")))
    base: float = field(default_factory=lambda: float(config.get("retry.backoff-base")))
    cap: float = field(default_factory=lambda: float(config.get("retry.backoff-max")))

    def delay(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (a server's Retry-After wins)."""
        hinted = getattr(exc, "retry_after", None)
        if isinstance(hinted, (int, float)) and hinted > 0:
            return min(float(hinted), self.cap)
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Failure:
    """How an attempt failed, as an executor reports it (no Dask types).

    ``cancelled``: its task was cancelled, by the run stopping (``fail_fast``) or
    because its inputs were lost with a worker; ``killed``: it killed its worker
    process on every attempt the cluster allows.
    """

    error: BaseException | None
    traceback: str = ""
    cancelled: bool = False
    killed: bool = False


class Next(enum.StrEnum):
    RETRY = "retry"
    FAIL = "fail"
    QUARANTINE = "quarantine"


@dataclass(frozen=True)
class Verdict:
    """What the runner does with a failed attempt: retry after ``delay``, fail, or quarantine."""

    next: Next
    reason: str
    delay: float = 0.0


KILLED_WORKER = (
    "this batch killed its worker process on every attempt (out of memory or a crash in "
    "native code); it is quarantined so the other batches can commit. Make the batch "
    "smaller (batching: size) or give workers more memory, then run `dbatch replay`."
)


def after_failure(
    failure: Failure, attempt: int, policy: RetryPolicy, *, stopping: bool = False
) -> Verdict:
    """The verdict on attempt ``attempt`` of a batch that failed as ``failure`` says.

    Examples
    --------
    >>> policy = RetryPolicy(attempts=3, base=0.0, cap=0.0)
    >>> after_failure(Failure(TimeoutError("slow")), 1, policy).next
    <Next.RETRY: 'retry'>
    >>> after_failure(Failure(ValueError("bug")), 1, policy).reason
    'deterministic error (not retried)'
    """
    if failure.killed:
        return Verdict(Next.QUARANTINE, KILLED_WORKER)
    if stopping and failure.cancelled:
        return Verdict(Next.FAIL, "cancelled: fail_fast")
    lost = failure.cancelled  # not stopping: its inputs went with a worker
    retryable = lost or (failure.error is not None and is_transient(failure.error))
    if retryable and attempt < policy.attempts and not stopping:
        why = LOST_INPUT if lost else "transient error"
        return Verdict(Next.RETRY, why, policy.delay(attempt, failure.error))
    if retryable:
        return Verdict(Next.FAIL, f"transient error persisted after {attempt} attempts")
    return Verdict(Next.FAIL, "deterministic error (not retried)")


LOST_INPUT = "its input data was lost with a worker"
