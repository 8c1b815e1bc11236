//! The frame every lifecycle function shares: the required arguments, the idempotency key, the
//! acting user, the row lock, and the answer. The entry points (mod.rs) only decide what changes.
use super::{returning, statement};
use crate::audit::{self, Change};
use crate::errors::{raise, required, Kind};
use crate::idempotency::{self, Claim};
use crate::plans::{first_row, not_null, ok, select, update};
use crate::subscriptions::ACTIVE_SQL;
use pgrx::datum::DatumWithOid;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, Uuid};
use serde_json::{json, Value};

const USER_SQL: &str = "SELECT 1 FROM checkout.users WHERE organization_id = $1 AND id = $2";

/// What a lifecycle function was asked, as its SQL arguments gave it.
pub struct Request<'a> {
    /// The SQL function's name: an idempotency key is bound to it.
    pub operation: &'static str,
    pub organization: Option<Uuid>,
    pub subscription: Option<Uuid>,
    pub changed_by: Option<Uuid>,
    pub reason: Option<&'a str>,
    pub key: Option<&'a str>,
    /// The function's own parameters, hashed with the rest for the idempotency key.
    pub parameters: Value,
}

/// A locked subscription (sql/queries/lifecycle/lock.sql).
pub struct Locked {
    pub status: String,
    pub customer: Uuid,
    pub product: Uuid,
    pub amount: i64,
    pub interval: String,
    pub interval_count: i32,
    pub cancel_pending: bool,
    pub in_period: bool,
    pub row: Value,
}

/// One lifecycle call: who asks, about which subscription.
pub struct Call {
    pub organization: Uuid,
    pub id: Uuid,
    pub changed_by: Option<Uuid>,
    pub reason: Option<String>,
}

impl Call {
    /// Tells the audit trigger what this call does while `sql` runs, then returns the row. On a
    /// Citus cluster a write whose answer comes from `RETURNING` (Citus refuses the JSON functions
    /// there) runs as `distributed` (returning the id), and the row is read after it.
    #[track_caller]
    pub fn write(
        &self,
        client: &mut SpiClient<'_>,
        change_type: &'static str,
        sql: &'static str,
        distributed: Option<&'static str>,
        args: &[DatumWithOid<'_>],
    ) -> Option<Value> {
        let _scope = audit::begin(Change {
            change_type,
            changed_by: self.changed_by,
            reason: self.reason.clone(),
            self_audited: false,
        });
        let json = |table| {
            first_row(table)
                .and_then(|row| ok(row.get::<JsonB>(1)))
                .map(|j| j.0)
        };
        match distributed.filter(|_| crate::citus::distributed()) {
            None => json(update(client, sql, None, args)),
            Some(sql) => {
                first_row(update(client, sql, None, args))?;
                let key = [self.organization.into(), self.id.into()];
                json(select(
                    client,
                    statement!("lifecycle/read.sql"),
                    Some(1),
                    &key,
                ))
            }
        }
    }

    #[track_caller]
    pub fn set_status(
        &self,
        client: &mut SpiClient<'_>,
        change_type: &'static str,
        status: &str,
        cancellation_reason: Option<&str>,
    ) -> Value {
        let args = [
            self.organization.into(),
            self.id.into(),
            status.into(),
            cancellation_reason.into(),
        ];
        let (sql, distributed) = returning!("lifecycle/set_status.sql");
        self.write(client, change_type, sql, Some(distributed), &args)
            .unwrap_or_else(|| self.vanished())
    }

    #[track_caller]
    pub fn set_pending_cancel(&self, client: &mut SpiClient<'_>, pending: bool) -> Value {
        let change_type = if pending { "cancelled" } else { "reactivated" };
        let args = [
            self.organization.into(),
            self.id.into(),
            pending.into(),
            self.reason.as_deref().into(),
            crate::plans::transaction_start().into(),
        ];
        let (sql, distributed) = returning!("lifecycle/set_pending_cancel.sql");
        self.write(client, change_type, sql, Some(distributed), &args)
            .unwrap_or_else(|| self.vanished())
    }

    #[track_caller]
    pub fn refuse(&self, message: impl Into<String>, status: &str, hint: &str) -> ! {
        raise(
            Kind::InvalidTransition,
            message,
            Some(format!("subscription_id: {}, status: {status}", self.id)),
            Some(hint),
        )
    }

    #[track_caller]
    pub fn vanished(&self) -> ! {
        raise(
            Kind::Internal,
            "checkout: a locked subscription was not updated",
            Some(format!("subscription_id: {}", self.id)),
            None,
        )
    }

    /// 23505 when the customer already has another active/trialing subscription to `product`.
    /// Twin: the unique index unique_active_subscription (sql/schema.sql), which a concurrent
    /// writer meets instead.
    pub fn refuse_if_other_active(
        &self,
        client: &mut SpiClient<'_>,
        customer: Uuid,
        product: Uuid,
    ) {
        let args = [
            self.organization.into(),
            customer.into(),
            product.into(),
            self.id.into(),
        ];
        let other = select(client, ACTIVE_SQL, Some(1), &args);
        if let Some(other) = first_row(other).and_then(|row| ok(row.get::<Uuid>(1))) {
            raise(
                Kind::Conflict,
                "the customer already has an active subscription to this product",
                Some(format!(
                    "subscription_id: {}, existing_subscription_id: {other}, product_id: {product}",
                    self.id
                )),
                Some("Cancel or change the existing subscription first."),
            );
        }
    }
}

/// Runs one lifecycle call: checks the required arguments, claims or replays the idempotency key,
/// checks the acting user, locks the subscription, lets `act` decide, and answers
/// `{"success": true, "changed": ..., "change_type": ..., <subscription>}`. `act` returns the
/// change type and the updated row, or None when nothing had to change.
pub fn run(
    request: Request<'_>,
    act: impl FnOnce(&mut SpiClient<'_>, &Call, &Locked) -> Option<(&'static str, Value)>,
) -> JsonB {
    let call = Call {
        organization: required(request.organization, "p_organization_id"),
        id: required(request.subscription, "p_subscription_id"),
        changed_by: request.changed_by,
        reason: request.reason.map(str::to_owned),
    };
    let _routed = crate::citus::require_tenant_node(request.operation, &call.organization);
    pgrx::spi::Spi::connect_mut(|client| {
        let key_id = match request.key {
            None => None,
            Some(key) => {
                let hashed = json!({
                    "subscription_id": call.id.to_string(),
                    "changed_by": call.changed_by.map(|u| u.to_string()),
                    "reason": request.reason,
                    "request": request.parameters,
                })
                .to_string();
                match idempotency::claim(client, call.organization, key, request.operation, &hashed)
                {
                    Claim::Replay(response) => return JsonB(response),
                    Claim::Owned(id) => Some(id),
                }
            }
        };
        // Pre-check; twin: the foreign key subscription_changes_changed_by_fkey (sql/schema.sql),
        // which holds checkout.actor on direct SQL (23503).
        if let Some(user) = call.changed_by {
            let found = select(
                client,
                USER_SQL,
                Some(1),
                &[call.organization.into(), user.into()],
            );
            if found.is_empty() {
                raise(
                    Kind::NotFound,
                    "user not found in organization",
                    Some(format!(
                        "changed_by: {user}, organization_id: {}",
                        call.organization
                    )),
                    Some(
                        "p_changed_by is a checkout.users id of the organization (staff), or NULL.",
                    ),
                );
            }
        }
        let args = [call.organization.into(), call.id.into()];
        let Some(row) = first_row(update(
            client,
            statement!("lifecycle/lock.sql"),
            Some(1),
            &args,
        )) else {
            raise(
                Kind::NotFound,
                "subscription not found in organization",
                Some(format!(
                    "subscription_id: {}, organization_id: {}",
                    call.id, call.organization
                )),
                None,
            );
        };
        let locked = Locked {
            status: not_null(row.get(1), "subscriptions.status"),
            customer: not_null(row.get(2), "subscriptions.customer_id"),
            product: not_null(row.get(3), "subscriptions.product_id"),
            amount: not_null(row.get(4), "subscriptions.amount"),
            interval: not_null(row.get(5), "subscriptions.interval"),
            interval_count: not_null(row.get(6), "subscriptions.interval_count"),
            cancel_pending: not_null(row.get(7), "subscriptions.cancel_at_period_end"),
            in_period: not_null(row.get(8), "period check"),
            row: not_null(row.get::<JsonB>(9), "subscription").0,
        };
        let (changed, change_type, mut response) = match act(client, &call, &locked) {
            Some((change_type, row)) => (true, Some(change_type), row),
            None => (false, None, locked.row.clone()),
        };
        if let Some(object) = response.as_object_mut() {
            object.insert("success".into(), true.into());
            object.insert("changed".into(), changed.into());
            object.insert("change_type".into(), change_type.into());
        }
        if let Some(id) = key_id {
            idempotency::complete(client, &id, &response);
        }
        JsonB(response)
    })
}
