-- keys replay-1..1000 were completed by bench setup with exactly these arguments
\set c random(1, 1000)
\set k (:c / 10 + 3) % 20
SELECT @S@.create_subscription_atomic('{"status": "active", "amount": 1999, "currency": "usd", "interval": "month", "interval_count": 1, "current_period_start": "2026-01-01T00:00:00Z", "current_period_end": "2026-02-01T00:00:00Z"}', ARRAY[jsonb_build_object('feature_id', bench_uuid(3, :c % 10))], bench_uuid(4, :c), bench_uuid(2, (:c % 10) + 10 * :k), bench_uuid(1, :c % 10 + 1), 'replay-' || :c);
