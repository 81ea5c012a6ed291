"""sergas-app: the lab's sample order service (stdlib HTTP server, PostgreSQL pool, Redis cache)."""
