-- half existing customers, half new ones
\set c random(1, 2 * :N)
\set r random(1, 1000000000)
\if :c > :N
SELECT @S@.upsert_customer_atomic(bench_uuid(1, :c % 10 + 1), 'new' || :r || '@example.com', NULL, 'New');
\else
SELECT @S@.upsert_customer_atomic(bench_uuid(1, :c % 10 + 1), 'user' || :c || '@example.com', NULL, 'Name ' || :r);
\endif
