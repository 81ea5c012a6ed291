"""The SQL the release runs (kept in one place so a release's query changes are one diff).

v1.1.0: orders now carry the discount code applied at checkout.
"""
from __future__ import annotations

RECENT_ORDERS = """
SELECT o.id, o.customer_id, o.status, o.total_cents, o.discount_code, o.created_at
FROM orders o
ORDER BY o.created_at DESC
LIMIT 20
"""

CUSTOMER_ORDERS = """
SELECT o.id, o.customer_id, o.status, o.total_cents, o.discount_code, o.created_at
FROM orders o
WHERE o.customer_id = %s
ORDER BY o.created_at DESC
LIMIT 20
"""

CUSTOMERS = """
SELECT c.id, c.name, c.email, c.tier
FROM customers c
ORDER BY c.id
LIMIT 20
"""

# The Zoho sync refreshes a customer's tier from the CRM.
SYNC_CUSTOMER = """
UPDATE customers SET tier = %s, synced_at = now() WHERE id = %s
"""
