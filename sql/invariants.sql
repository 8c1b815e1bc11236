-- checkout.check_invariants(): what must hold however the writes happened (functions, crashes,
-- kills, timeouts). Returns one row per violation; empty means consistent. Used by the fault,
-- fuzz and stress runs.
CREATE FUNCTION checkout.check_invariants()
RETURNS TABLE (invariant text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- every subscription has its 'created' audit row ('imported' for one import_seed brought in)
  SELECT 'subscription without its created audit row', s.id::text
  FROM checkout.subscriptions s
  WHERE NOT EXISTS (SELECT 1 FROM checkout.subscription_changes c WHERE c.organization_id = s.organization_id AND c.subscription_id = s.id AND c.change_type IN ('created', 'imported'))
  UNION ALL
  -- ...and only one: a path that wrote the audit row itself and let the trigger write another would
  -- leave two. Rows followed by a 'deleted' row belong to an earlier life of a re-inserted id.
  SELECT 'subscription with more than one created audit row', format('%s (%s)', c.subscription_id, count(*))
  FROM checkout.subscription_changes c
  WHERE c.change_type = 'created'
    AND EXISTS (SELECT 1 FROM checkout.subscriptions s WHERE s.organization_id = c.organization_id AND s.id = c.subscription_id)
    AND NOT EXISTS (SELECT 1 FROM checkout.subscription_changes d
                    WHERE d.organization_id = c.organization_id AND d.subscription_id = c.subscription_id AND d.change_type = 'deleted' AND d.created_at >= c.created_at)
  GROUP BY c.organization_id, c.subscription_id HAVING count(*) > 1
  UNION ALL
  -- a trialing subscription has its trial recorded
  SELECT 'trialing subscription without trial_history', s.id::text
  FROM checkout.subscriptions s
  WHERE s.status = 'trialing'
    AND NOT EXISTS (SELECT 1 FROM checkout.trial_history t WHERE t.organization_id = s.organization_id AND t.subscription_id = s.id)
  UNION ALL
  -- at most one active or trialing subscription per (organization, customer, product)
  SELECT 'duplicate active subscription', format('customer %s, product %s: %s', customer_id, product_id, count(*))
  FROM checkout.subscriptions WHERE status IN ('active', 'trialing')
  GROUP BY organization_id, customer_id, product_id HAVING count(*) > 1
  UNION ALL
  -- grants belong to the subscription's customer and organization
  SELECT 'grant of another customer''s subscription', g.id::text
  FROM checkout.feature_grants g JOIN checkout.subscriptions s ON s.organization_id = g.organization_id AND s.id = g.subscription_id
  WHERE s.customer_id <> g.customer_id
  UNION ALL
  -- the customer counters equal a recount
  SELECT 'customer counters differ from a recount',
         format('customer %s: count %s (recount %s), active %s (recount %s)', c.id, c.subscription_count, r.n,
                c.has_active_subscription, r.active)
  FROM checkout.customers c
  CROSS JOIN LATERAL (SELECT count(*) AS n, coalesce(bool_or(s.status IN ('active', 'trialing')), false) AS active
                      FROM checkout.subscriptions s WHERE s.organization_id = c.organization_id AND s.customer_id = c.id) r
  WHERE c.subscription_count <> r.n OR c.has_active_subscription <> r.active
  UNION ALL
  -- an ended subscription grants nothing
  SELECT 'grant in force on an ended subscription', g.id::text
  FROM checkout.feature_grants g JOIN checkout.subscriptions s ON s.organization_id = g.organization_id AND s.id = g.subscription_id
  WHERE s.status IN ('canceled', 'expired') AND g.revoked_at IS NULL
  UNION ALL
  -- every status a subscription is in was reached through an audited change
  SELECT 'subscription status differs from its last audit row', s.id::text
  FROM checkout.subscriptions s
  WHERE s.status IS DISTINCT FROM (
    SELECT coalesce(c.new_values->>'status', c.old_values->>'status') FROM checkout.subscription_changes c
    WHERE c.organization_id = s.organization_id AND c.subscription_id = s.id AND (c.new_values ? 'status') ORDER BY c.created_at DESC, c.change_type = 'created' LIMIT 1)
  UNION ALL
  -- no idempotency key left half-done: checkout never commits one in 'processing'
  SELECT 'idempotency key stuck in processing', format('%s/%s', k.organization_id, k.key)
  FROM checkout.idempotency_keys k WHERE k.status = 'processing'
  UNION ALL
  -- a completed key that answered with a subscription points at one that exists
  SELECT 'completed key names a missing subscription', format('%s/%s', k.organization_id, k.key)
  FROM checkout.idempotency_keys k
  WHERE k.status = 'completed' AND k.operation = 'create_subscription_atomic'
    AND (k.response->>'success')::boolean
    AND NOT EXISTS (SELECT 1 FROM checkout.subscriptions s WHERE s.organization_id = k.organization_id AND s.id = (k.response->>'subscription_id')::uuid)
  UNION ALL
  -- no payment refunded (pending or succeeded refunds) beyond its amount
  SELECT 'payment refunded beyond its amount',
         format('payment %s/%s: %s, refunded or pending: %s', p.organization_id, p.stripe_payment_intent_id, p.amount, r.total)
  FROM checkout.payment_intents p
  CROSS JOIN LATERAL (SELECT coalesce(sum(f.amount), 0) AS total FROM checkout.refunds f
                      WHERE f.organization_id = p.organization_id AND f.payment_intent_id = p.stripe_payment_intent_id
                        AND f.status IN ('pending', 'succeeded')) r
  WHERE r.total > p.amount
  UNION ALL
  -- every customer has its current email recorded as a variant
  SELECT 'customer email not recorded in customer_email_variants', c.id::text
  FROM checkout.customers c
  WHERE NOT EXISTS (SELECT 1 FROM checkout.customer_email_variants v
                    WHERE v.organization_id = c.organization_id AND v.customer_id = c.id AND lower(v.email) = lower(c.email))
$$;
REVOKE ALL ON FUNCTION checkout.check_invariants() FROM PUBLIC;
COMMENT ON FUNCTION checkout.check_invariants() IS 'Consistency checks (audit rows: one created row per subscription, status as last recorded; trials, one active subscription, grants of ended subscriptions, counters, idempotency keys, refunds within their payment, email variants): one row per violation.';
