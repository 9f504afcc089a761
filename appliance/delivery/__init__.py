"""Delivery from the spool to next hops (docs/delivery.md). For plugins: whether a
recipient's local mailbox is full (the ``maildir-quota`` plugin asks at RCPT), and
the before-queue hand-off to a next hop (the ``before-queue`` plugin)."""

from appliance.delivery.before_queue import QueueRefused, hand_on
from appliance.delivery.maildir import is_overquota

__all__ = ["QueueRefused", "hand_on", "is_overquota"]
