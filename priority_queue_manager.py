"""The seed's ``priority_queue_manager`` module: the fleet's queues of ``workers.queues``.

``from priority_queue_manager import PriorityQueueManager, Priority`` as in the seed's README;
payloads run on the Celery workers of the queue of their priority (high, medium, low).
"""

from workers.queues import Priority, PriorityQueueManager

__all__ = ["Priority", "PriorityQueueManager"]
