"""dramatiq's Redis broker, with idle consumers woken by the next message.

dramatiq's Redis consumer polls: after a fetch that found nothing it sleeps, backing off up to
its idle timeout (`dramatiq_worker_timeout`, 100 ms here), so a step sent to an idle worker
waited 50-100 ms before anyone looked (issue 13: the loop's first step). Here each enqueue
also pushes a token to the queue's wake list, and an idle consumer blocks on that list
(BLPOP) for the time it would have slept: a message arriving in the meantime ends the wait
within a round trip, and a wait nobody ends is the old poll, cap and backoff unchanged.

The token is a hint and nothing else: the consumer fetches after every wait, woken or not, so
a lost or stale token costs one poll or one empty fetch. The list holds one token at most (a
push to a list with a client blocked on it hands the token straight to that client, one
client a push), and expires when no one sends for a minute. RabbitMQ pushes messages to its
consumers and needs none of this.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker as DramatiqRedisBroker
from dramatiq.brokers.redis import _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed

WAKE_TTL_S = 60


def wake_key(namespace: str, queue_name: str) -> str:
    return f"{namespace}:{queue_name}.wake"


class RedisBroker(DramatiqRedisBroker):
    """The Redis broker of BROKER_URL=redis://... (settings.DRAMATIQ_BROKER)."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> WakingConsumer:
        return WakingConsumer(self, queue_name, prefetch, timeout)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        sent = super().enqueue(message, delay=delay)
        key = wake_key(self.namespace, sent.queue_name)  # the delay queue's, when delayed
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, 1)
        pipe.ltrim(key, 0, 0)
        pipe.expire(key, WAKE_TTL_S)
        pipe.execute()
        return sent


class WakingConsumer(_RedisConsumer):
    """dramatiq's consumer, whose idle wait ends when a message is enqueued."""

    def __init__(self, broker: RedisBroker, queue_name: str, prefetch: int, timeout: int):
        # The parent sleeps its backoff after an empty fetch; with no timeout that sleep is
        # nothing, and the wait happens here instead.
        super().__init__(broker, queue_name, prefetch, 0)  # type: ignore[no-untyped-call]
        self.idle_ms = timeout
        self.wake_key = wake_key(broker.namespace, queue_name)

    def __next__(self) -> Any:
        message = super().__next__()  # type: ignore[no-untyped-call]
        if message is None:
            self._wait(self._backoff_ms())
        return message

    def _backoff_ms(self) -> int:
        # What the parent would have slept: `misses` already counts this empty fetch.
        return compute_backoff(self.misses - 1, max_backoff=self.idle_ms)[1]

    def _wait(self, backoff_ms: int) -> None:
        if self.outstanding_message_count >= self.prefetch:
            # Full: no fetch would take a message, so a token is left for a consumer that can.
            time.sleep(backoff_ms / 1000)
            return
        try:
            self.broker.client.blpop([self.wake_key], timeout=max(backoff_ms, 1) / 1000)
        except redis.TimeoutError:  # a socket timeout shorter than the wait: a poll as before
            pass
        except redis.ConnectionError as error:  # the worker reconnects, as after a fetch
            raise ConnectionClosed(error) from None  # type: ignore[no-untyped-call]
