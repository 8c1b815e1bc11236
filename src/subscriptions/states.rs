//! The subscription state machine: the one table of allowed status changes. A trigger
//! (src/subscriptions/triggers.rs, attached by sql/lifecycle.sql) checks every status change against it, whether it comes from a lifecycle
//! function or a direct UPDATE; docs/design.md shows the same table (a test compares them).
use pgrx::prelude::*;

/// (from, to) pairs. Keeping the same status is not a transition and always allowed.
pub const TRANSITIONS: &[(&str, &str)] = &[
    ("incomplete", "active"),
    ("incomplete", "trialing"),
    ("incomplete", "canceled"),
    ("incomplete", "expired"),
    ("trialing", "active"),
    ("trialing", "past_due"),
    ("trialing", "paused"),
    ("trialing", "canceled"),
    ("trialing", "expired"),
    ("active", "past_due"),
    ("active", "paused"),
    ("active", "canceled"),
    ("active", "expired"),
    ("past_due", "active"),
    ("past_due", "unpaid"),
    ("past_due", "canceled"),
    ("past_due", "expired"),
    ("unpaid", "active"),
    ("unpaid", "canceled"),
    ("unpaid", "expired"),
    ("paused", "active"),
    ("paused", "canceled"),
    ("paused", "expired"),
    // Reactivation, only while the paid period lasts (the trigger checks the current_period_end
    // the subscription was canceled with).
    ("canceled", "active"),
];

/// The statuses of a subscription with access and a billing period running: only these can be set
/// to cancel at period end (and undo that) or change plan. Each may become `canceled` (above), so a
/// pending cancellation can always complete.
pub const LIVE: &[&str] = &["trialing", "active", "past_due"];

/// The statuses a subscription ends in: canceled_at/ended_at stamped, grants revoked. Twins in SQL:
/// the stamp trigger's WHEN and end_subscription_periods (sql/lifecycle.sql), the CHECKs
/// check_ended_stamped and check_canceled_stamped (sql/schema.sql).
pub const ENDED: &[&str] = &["canceled", "expired"];

pub fn allowed(from: &str, to: &str) -> bool {
    from == to || TRANSITIONS.contains(&(from, to))
}

/// The message and hint of a refused status change: one wording for the lifecycle functions'
/// pre-checks (subscriptions/lifecycle) and their twin, the state-machine trigger
/// (subscriptions/triggers.rs), which also refuses direct UPDATEs.
pub fn refused_transition(from: &str, to: &str) -> (String, String) {
    (
        format!("subscription status cannot change from {from} to {to}"),
        format!(
            "From {from} a subscription may become: {}.",
            successors(from)
        ),
    )
}

/// A canceled subscription comes back only within its paid period: the message and hint of the
/// reactivate pre-check and of its twin in the state-machine trigger.
pub const REACTIVATION_TOO_LATE: (&str, &str) = (
    "a canceled subscription can only be reactivated within its period",
    "Create a new subscription instead.",
);

/// The statuses `from` may become, in the order of subscription_transitions().
fn successors(from: &str) -> String {
    let to: Vec<&str> = TRANSITIONS
        .iter()
        .filter(|(f, _)| *f == from)
        .map(|(_, t)| *t)
        .collect();
    if to.is_empty() {
        "nothing (final)".to_owned()
    } else {
        to.join(", ")
    }
}

/// Whether a subscription may go from status `from` to `to`.
#[pg_extern(immutable, parallel_safe, strict)]
fn subscription_transition_allowed(from: &str, to: &str) -> bool {
    allowed(from, to)
}

/// The allowed status changes, one row each.
#[pg_extern(immutable, parallel_safe)]
fn subscription_transitions(
) -> TableIterator<'static, (name!(from_status, String), name!(to_status, String))> {
    TableIterator::new(
        TRANSITIONS
            .iter()
            .map(|(from, to)| ((*from).to_owned(), (*to).to_owned())),
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn terminal_and_self_transitions() {
        assert!(allowed("expired", "expired"));
        assert!(!TRANSITIONS.iter().any(|(from, _)| *from == "expired"));
        assert!(allowed("canceled", "active"));
        assert!(!allowed("canceled", "past_due"));
    }

    #[test]
    fn every_status_named_here_is_one_the_check_allows() {
        let known = crate::check_rules::SUBSCRIPTION_STATUSES;
        let named = TRANSITIONS
            .iter()
            .flat_map(|(f, t)| [f, t])
            .chain(LIVE)
            .chain(ENDED);
        for status in named {
            assert!(known.contains(status), "{status}");
        }
    }

    #[test]
    fn a_pending_cancellation_can_always_complete() {
        for status in LIVE {
            assert!(allowed(status, "canceled"), "{status}");
        }
    }

    #[test]
    fn the_design_doc_shows_this_table() {
        let readme = include_str!("../../docs/design.md");
        let start = readme
            .find("<!-- transitions -->")
            .expect("docs/design.md lacks the transitions table");
        let end = readme[start..].find("<!-- /transitions -->").unwrap() + start;
        let mut documented: Vec<(String, String)> = Vec::new();
        for line in readme[start..end].lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let from = cells[1].trim_matches('`');
            // Each target is the first `quoted` word of a comma-separated item.
            for item in cells[2].split(',') {
                if let Some(to) = item.split('`').nth(1) {
                    documented.push((from.to_owned(), to.to_owned()));
                }
            }
        }
        let mut code: Vec<(String, String)> = TRANSITIONS
            .iter()
            .map(|(f, t)| ((*f).to_owned(), (*t).to_owned()))
            .collect();
        documented.sort();
        code.sort();
        assert_eq!(documented, code);
    }
}
