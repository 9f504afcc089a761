"""Delivery from the spool to next hops (docs/delivery.md). For plugins: whether a
recipient's local mailbox is full (the ``maildir-quota`` plugin asks at RCPT)."""

from appliance.delivery.maildir import is_overquota

__all__ = ["is_overquota"]
