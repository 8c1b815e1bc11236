//! Webhook events (sql/webhooks.sql): stored once per provider event, applied in order per object,
//! processed through a SKIP LOCKED queue.
use pgrx::prelude::*;

extension_sql_file!(
    "../sql/webhooks.sql",
    name = "webhooks",
    requires = ["schema", "maintenance", citus::routed_here]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{count, fixture, json, sqlstate_of, text};
    use crate::test_support::{ORG_A, ORG_B};
    use pgrx::prelude::*;

    fn record(event: &str, object: &str, at: &str) -> serde_json::Value {
        json(&format!(
            "SELECT checkout.record_webhook_event('{ORG_A}', '{event}', 'customer.subscription.updated',
               jsonb_build_object('data', jsonb_build_object('object', jsonb_build_object('id', '{object}'))), '{at}')"
        ))
    }

    #[pg_test]
    fn with_its_organization_a_claim_is_settled_in_that_organization_only() {
        fixture();
        record("evt_o", "sub_o", "2026-01-01T00:00:00Z");
        let id = text("SELECT id::text FROM checkout.claim_webhook_events(1)");
        let complete = |org: &str, attempt: i32| {
            text(&format!(
                "SELECT checkout.complete_webhook_event('{org}'::uuid, '{id}'::uuid, {attempt})::text"
            ))
        };
        let fail = |org: &str, attempt: i32| {
            text(&format!(
                "SELECT coalesce(checkout.fail_webhook_event('{org}'::uuid, '{id}'::uuid, 'boom', {attempt}), 'none')"
            ))
        };
        // Another organization's event is not found; another attempt is not this claim.
        assert_eq!(
            (complete(ORG_B, 1), fail(ORG_B, 1), complete(ORG_A, 2)),
            ("false".into(), "none".into(), "false".into())
        );
        assert_eq!(fail(ORG_A, 1), "deferred");
        assert_eq!(
            text("SELECT attempts::text FROM checkout.claim_webhook_events(1)"),
            "2"
        );
        assert_eq!(complete(ORG_A, 2), "true");
        assert_eq!(
            text("SELECT status || ' ' || (error_message IS NULL) FROM checkout.webhook_events"),
            "processed true"
        );
    }

    #[pg_test]
    fn each_event_is_stored_once() {
        fixture();
        let first = record("evt_1", "sub_1", "2026-01-01T00:00:00Z");
        assert_eq!(
            (first["duplicate"].as_bool(), first["status"].as_str()),
            (Some(false), Some("pending"))
        );
        let again = record("evt_1", "sub_1", "2026-01-01T00:00:00Z");
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["event_id"], first["event_id"]);
        assert_eq!(count("SELECT count(*) FROM checkout.webhook_events"), 1);
        assert_eq!(
            text("SELECT object_id FROM checkout.webhook_events"),
            "sub_1"
        );
    }

    #[pg_test]
    fn events_of_one_object_are_applied_in_order_and_old_ones_go_stale() {
        fixture();
        // Delivered out of order: evt_b (10:00) before evt_a (09:00), plus another object's event.
        record("evt_b", "sub_1", "2026-01-01T10:00:00Z");
        record("evt_a", "sub_1", "2026-01-01T09:00:00Z");
        record("evt_x", "sub_2", "2026-01-01T09:30:00Z");
        // One batch: the oldest event of each object; evt_b waits for evt_a.
        let claimed = text("SELECT string_agg(provider_event_id, ',' ORDER BY provider_event_id) FROM checkout.claim_webhook_events(10)");
        assert_eq!(claimed, "evt_a,evt_x");
        assert_eq!(
            count("SELECT count(*) FROM checkout.claim_webhook_events(10)"),
            0,
            "evt_b waits while evt_a is processing"
        );
        for id in ["evt_a", "evt_x"] {
            assert_eq!(text(&format!("SELECT checkout.complete_webhook_event(id)::text FROM checkout.webhook_events WHERE provider_event_id = '{id}'")), "true");
        }
        assert_eq!(
            text(
                "SELECT string_agg(provider_event_id, ',') FROM checkout.claim_webhook_events(10)"
            ),
            "evt_b"
        );
        assert_eq!(text("SELECT checkout.complete_webhook_event(id)::text FROM checkout.webhook_events WHERE provider_event_id = 'evt_b'"), "true");
        // A late redelivery of something older than what was applied: stored, stale, never handed out.
        let late = record("evt_old", "sub_1", "2026-01-01T08:00:00Z");
        assert_eq!(late["status"], "stale");
        assert_eq!(
            count("SELECT count(*) FROM checkout.claim_webhook_events(10)"),
            0
        );
    }

    #[pg_test]
    fn failed_attempts_are_retried_then_failed() {
        fixture();
        record("evt_f", "sub_9", "2026-01-01T00:00:00Z");
        Spi::run("SET LOCAL checkout.reconciliation_max_attempts = 2").unwrap();
        for (attempt, expected) in [(1, "deferred"), (2, "failed")] {
            let id = text("SELECT string_agg(id::text, ',') FROM checkout.claim_webhook_events(1)");
            assert_eq!(
                text(&format!(
                    "SELECT checkout.fail_webhook_event('{id}', 'boom')"
                )),
                expected,
                "attempt {attempt}"
            );
        }
        assert_eq!(
            count("SELECT count(*) FROM checkout.claim_webhook_events(1)"),
            0
        );
    }

    /// A claim is a lease: an event whose worker died is handed out again after
    /// checkout.webhook_lease, and fails once the attempts are used up.
    #[pg_test]
    fn a_claim_is_a_lease() {
        fixture();
        record("evt_l", "sub_l", "2026-01-01T00:00:00Z");
        Spi::run("SET LOCAL checkout.reconciliation_max_attempts = 2").unwrap();
        let claim = || {
            text("SELECT coalesce(string_agg(provider_event_id || ':' || attempts, ','), '') FROM checkout.claim_webhook_events(10)")
        };
        let expire = || {
            Spi::run("UPDATE checkout.webhook_events SET updated_at = now() - interval '6 minutes'")
                .unwrap()
        };
        assert_eq!(claim(), "evt_l:1");
        assert_eq!(claim(), "", "leased to the first worker");
        expire();
        assert_eq!(
            claim(),
            "evt_l:2",
            "the first worker died: handed out again"
        );
        Spi::run("SET LOCAL checkout.webhook_lease = '1h'").unwrap();
        expire();
        assert_eq!(claim(), "", "a longer lease is still running");
        Spi::run("SET LOCAL checkout.webhook_lease = '5min'").unwrap();
        assert_eq!(claim(), "", "attempts used up");
        assert_eq!(
            text("SELECT status || ': ' || error_message FROM checkout.webhook_events"),
            "failed: claim lease expired (attempt 2)"
        );
    }

    /// complete/fail with the claimed attempt belong to that claim: a worker whose lease ran out
    /// cannot finish (or defer) the claim another worker now holds.
    #[pg_test]
    fn a_late_worker_cannot_finish_another_workers_claim() {
        fixture();
        record("evt_t", "sub_t", "2026-01-01T00:00:00Z");
        let first = text("SELECT id || ' ' || attempts FROM checkout.claim_webhook_events(1)");
        let (id, attempt) = first.split_once(' ').unwrap();
        assert_eq!(attempt, "1");
        Spi::run("UPDATE checkout.webhook_events SET updated_at = now() - interval '6 minutes'")
            .unwrap();
        assert_eq!(
            text("SELECT attempts::text FROM checkout.claim_webhook_events(1)"),
            "2"
        );
        // The first worker wakes up: its claim (attempt 1) is gone.
        assert_eq!(
            text(&format!(
                "SELECT checkout.complete_webhook_event('{id}', 1)::text"
            )),
            "false"
        );
        assert_eq!(
            text(&format!(
                "SELECT (checkout.fail_webhook_event('{id}', 'late', 1) IS NULL)::text"
            )),
            "true"
        );
        assert_eq!(
            text("SELECT status FROM checkout.webhook_events"),
            "processing"
        );
        // The second worker's calls are its own.
        assert_eq!(
            text(&format!(
                "SELECT checkout.complete_webhook_event('{id}', 2)::text"
            )),
            "true"
        );
        assert_eq!(
            text("SELECT status FROM checkout.webhook_events"),
            "processed"
        );
    }

    /// A claim whose lease ran out while a newer event of its object was applied goes stale; it
    /// does not hold the object's queue forever.
    #[pg_test]
    fn an_expired_claim_overtaken_by_a_newer_event_goes_stale() {
        fixture();
        record("evt_1", "sub_q", "2026-01-01T09:00:00Z");
        assert_eq!(
            text("SELECT provider_event_id FROM checkout.claim_webhook_events(1)"),
            "evt_1"
        );
        // Its worker hangs; meanwhile a newer event of the object is applied (by hand here).
        record("evt_2", "sub_q", "2026-01-01T10:00:00Z");
        Spi::run("UPDATE checkout.webhook_events SET status = 'processed' WHERE provider_event_id = 'evt_2';
                  UPDATE checkout.webhook_events SET updated_at = now() - interval '6 minutes' WHERE provider_event_id = 'evt_1'").unwrap();
        record("evt_3", "sub_q", "2026-01-01T11:00:00Z");
        assert_eq!(
            text(
                "SELECT string_agg(provider_event_id, ',') FROM checkout.claim_webhook_events(10)"
            ),
            "evt_3"
        );
        assert_eq!(
            text("SELECT status FROM checkout.webhook_events WHERE provider_event_id = 'evt_1'"),
            "stale"
        );
    }

    /// An older event that arrives while a newer event of its object is being processed waits for
    /// it, then goes stale: never two events of one object at once, never out of order.
    #[pg_test]
    fn an_older_event_waits_while_a_newer_one_is_processing() {
        fixture();
        record("evt_new", "sub_1", "2026-01-01T10:00:00Z");
        assert_eq!(
            text(
                "SELECT string_agg(provider_event_id, ',') FROM checkout.claim_webhook_events(10)"
            ),
            "evt_new"
        );
        assert_eq!(
            record("evt_old", "sub_1", "2026-01-01T09:00:00Z")["status"],
            "pending"
        );
        assert_eq!(
            count("SELECT count(*) FROM checkout.claim_webhook_events(10)"),
            0
        );
        assert_eq!(text("SELECT checkout.complete_webhook_event(id)::text FROM checkout.webhook_events WHERE provider_event_id = 'evt_new'"), "true");
        assert_eq!(
            count("SELECT count(*) FROM checkout.claim_webhook_events(10)"),
            0
        );
        assert_eq!(
            text("SELECT status FROM checkout.webhook_events WHERE provider_event_id = 'evt_old'"),
            "stale"
        );
    }

    /// A worker of some event types claims through the (type, status, created_at) index.
    #[pg_test]
    fn a_claim_by_type_uses_the_type_index() {
        fixture();
        // A backlog of 20,000 pending events of 39 types, and 40 pending events of type.0.
        Spi::run(
            &format!("INSERT INTO checkout.webhook_events (organization_id, provider_event_id, type, object_id, status, payload, event_created_at)
             SELECT '{ORG_A}', 'evt_' || g,
                    CASE WHEN g <= 40 THEN 'type.0' ELSE 'type.' || (1 + g % 39) END, 'obj_' || g,
                    'pending', '{{}}', now() - g * interval '1 second'
             FROM generate_series(1, 20040) g;
             ANALYZE checkout.webhook_events"),
        )
        .unwrap();
        let scans_of = |sql: &str| {
            let before = count("SELECT pg_stat_get_xact_numscans('checkout.idx_webhook_events_type_status'::regclass)");
            let result = text(sql);
            let after = count("SELECT pg_stat_get_xact_numscans('checkout.idx_webhook_events_type_status'::regclass)");
            (result, after - before)
        };
        // A batch of 0 runs the claim's housekeeping (expired leases, superseded events) but reads
        // no candidate: what a real claim scans beyond that is its own candidate query.
        let (_, housekeeping) = scans_of(
            "SELECT count(*)::text FROM checkout.claim_webhook_events(0, ARRAY['type.0'])",
        );
        let (claimed, claim) = scans_of("SELECT string_agg(DISTINCT type, ',') || ' ' || count(*) FROM checkout.claim_webhook_events(100, ARRAY['type.0'])");
        assert_eq!(claimed, "type.0 40");
        assert!(
            claim > housekeeping,
            "the typed claim's candidates were not read through idx_webhook_events_type_status"
        );
        assert_eq!(
            count("SELECT count(*) FROM checkout.claim_webhook_events(100, ARRAY['type.0'])"),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM checkout.claim_webhook_events(10)"),
            10
        );
    }

    #[pg_test]
    fn webhook_invalid_arguments() {
        fixture();
        let call =
            |args: &str| sqlstate_of(&format!("SELECT checkout.record_webhook_event({args})"));
        assert_eq!(call("NULL, 'e', 't', '{}', now()"), "22004");
        assert_eq!(call(&format!("'{ORG_A}', '', 't', '{{}}', now()")), "22023");
        assert_eq!(call(&format!("'{ORG_A}', 'e', 't', '[1]', now()")), "22023");
        assert_eq!(
            call("'a0000000-0000-0000-0000-000000000009', 'e', 't', '{}', now()"),
            "P0002"
        );
        assert_eq!(
            sqlstate_of("SELECT checkout.claim_webhook_events(-1)"),
            "22023"
        );
        assert_eq!(
            sqlstate_of("SELECT checkout.claim_webhook_events(NULL, ARRAY['t'])"),
            "22023"
        );
    }
}
