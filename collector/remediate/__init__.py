"""Runbook step 4: mitigations as data, plans, approvals, batched apply and the audit log.

`remediate ACTION` plans (check mode + redacted diff) → `approve` (a second person, bound to the
plan's hash) → `remediate apply` (canary, batches, health gate, verify, after-bundle); every step
appends a hash-chained record to the audit log.
"""

from __future__ import annotations

from collector.core import UsageError


class Refused(UsageError):
    """A safety rule refused the request; nothing was changed on any host."""
