-- sergas-app's schema and seed data (run by lab/provision/db.sh as the sergas user; idempotent).
CREATE TABLE IF NOT EXISTS customers (
    id         integer PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL,
    tier       text NOT NULL DEFAULT 'standard',
    synced_at  timestamptz
);

CREATE TABLE IF NOT EXISTS orders (
    id          bigserial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    status      text NOT NULL,
    total_cents integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO customers (id, name, email, tier)
SELECT g, 'Customer ' || g, 'customer' || g || '@example.com',
       (ARRAY['standard', 'gold', 'platinum'])[1 + g % 3]
FROM generate_series(1, 500) AS g
ON CONFLICT (id) DO NOTHING;

-- Enough orders that losing the customer index turns a lookup into a slow sequential scan.
INSERT INTO orders (customer_id, status, total_cents, created_at)
SELECT 1 + (g * 7919::bigint) % 500, (ARRAY['paid', 'shipped', 'refunded'])[1 + g % 3], 500 + (g * 31) % 50000,
       now() - make_interval(secs => g)
FROM generate_series(1, 300000) AS g
WHERE NOT EXISTS (SELECT 1 FROM orders LIMIT 1);

CREATE INDEX IF NOT EXISTS orders_created_at_idx ON orders (created_at DESC);
CREATE INDEX IF NOT EXISTS orders_customer_id_idx ON orders (customer_id, created_at DESC);
ANALYZE customers;
ANALYZE orders;
