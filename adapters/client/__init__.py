"""An async Python client for a remote queue speaking LeanCloud Cloud Queue's REST protocol.

``QueueClient`` (``queue_client``) implements the ``Queue`` protocol, as the embedded ``Engine``
does. Its parts: ``transport`` (signed requests, the event stream), ``answers`` (an answer as a
typed error), ``wire`` (TaskInfo and schedule objects decoded, options encoded), ``sse`` (the
Server-Sent Events parser) and ``schedules`` (schedule requests checked before sending). The
errors only a remote queue raises live with the others in ``engine.core.errors``.
"""

from cloudqueue.adapters.client.queue_client import QueueClient
from cloudqueue.adapters.client.wire import schedule_info_from_wire, task_info_from_wire
from cloudqueue.engine.core.errors import (
    QueueUnavailableError,
    RemoteQuotaExceededError,
    UnexpectedResponseError,
)

QuotaExceededError = RemoteQuotaExceededError  # what a remote queue's 429 raises

__all__ = [
    "QueueClient",
    "QueueUnavailableError",
    "QuotaExceededError",
    "RemoteQuotaExceededError",
    "UnexpectedResponseError",
    "schedule_info_from_wire",
    "task_info_from_wire",
]
