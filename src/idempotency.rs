//! Stripe-style idempotency keys, per organization (seed migration 002, with the claim it lacked).
//!
//! A key is claimed by inserting it in the caller's transaction, so the key and the work commit or
//! roll back together. A second caller with the same key blocks on that insert until the first
//! finishes: it then replays the stored response (first committed) or claims the key itself (first
//! rolled back). A key is bound to one operation and one hash of the canonical request.
use crate::errors::{raise, Kind};
use crate::gucs::IDEMPOTENCY_KEY_TTL;
use crate::plans::{first_row, ok, select, update};

use pgrx::spi::SpiClient;
use pgrx::{JsonB, Uuid};

/// Inserts nothing for an unknown organization (reported as P0002, like every missing tenant row).
const CLAIM_SQL: &str = "
INSERT INTO checkout.idempotency_keys (organization_id, key, operation, request_hash, status, expires_at)
SELECT $1, $2, $3, pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to($4, 'UTF8')), 'hex'), 'processing',
       pg_catalog.now() + pg_catalog.make_interval(secs => $5)
WHERE EXISTS (SELECT 1 FROM checkout.organizations o WHERE o.id = $1)
ON CONFLICT (organization_id, key) DO NOTHING
RETURNING 1";

/// The same on a Citus cluster, which fails an `INSERT ... SELECT` that inserts nothing on conflict
/// ("consistency check on SPI tuple count failed", seen with 16 sessions on one key): the
/// organization is checked first (`citus::organization_exists`), and the key inserted from VALUES.
const CLAIM_VALUES_SQL: &str = "
INSERT INTO checkout.idempotency_keys (organization_id, key, operation, request_hash, status, expires_at)
VALUES ($1, $2, $3, pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to($4, 'UTF8')), 'hex'), 'processing',
        pg_catalog.now() + pg_catalog.make_interval(secs => $5))
ON CONFLICT (organization_id, key) DO NOTHING
RETURNING 1";

/// The key's state (KeyState::read). Read first without a lock: a replay (the common retry) then
/// writes nothing, so its commit needs no WAL flush.
macro_rules! key_state_sql {
    () => {
        "
SELECT status, operation,
       request_hash = pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to($3, 'UTF8')), 'hex'),
       response,
       created_at <= pg_catalog.now() - pg_catalog.make_interval(secs => $4)
FROM checkout.idempotency_keys
WHERE organization_id = $1 AND key = $2"
    };
}
const LOOKUP_SQL: &str = key_state_sql!();
/// The same, locked: taken only when the key must be re-claimed.
const EXISTING_SQL: &str = concat!(key_state_sql!(), "\nFOR NO KEY UPDATE");

const RECLAIM_SQL: &str = "
UPDATE checkout.idempotency_keys
SET operation = $2, request_hash = pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to($3, 'UTF8')), 'hex'),
    status = 'processing', response = NULL, error_message = NULL, retry_count = retry_count + 1,
    created_at = CASE WHEN $5 THEN pg_catalog.now() ELSE created_at END,
    expires_at = CASE WHEN $5 THEN pg_catalog.now() ELSE created_at END + pg_catalog.make_interval(secs => $4),
    updated_at = pg_catalog.now()
WHERE organization_id = $1 AND key = $6";

const COMPLETE_SQL: &str = "
UPDATE checkout.idempotency_keys SET status = 'completed', response = $3, updated_at = pg_catalog.now()
WHERE organization_id = $1 AND key = $2";

/// What the caller must do after [`claim`].
pub enum Claim {
    /// The key is ours: do the work, then [`complete`] it.
    Owned(Owned),
    /// The key already holds this response (with `"replayed": true` added): return it.
    Replay(serde_json::Value),
}

/// A key the caller holds (its primary key: the organization and the key).
pub struct Owned {
    organization: Uuid,
    key: String,
}

/// Checks a key's length: 1-255 characters.
pub fn validate_key(key: &str) {
    let len = key.chars().count();
    if len == 0 || len > 255 {
        raise(
            Kind::InvalidParameter,
            "idempotency key must be 1 to 255 characters",
            Some(format!("length: {len}")),
            Some("Use a UUID or another unique string per logical operation."),
        );
    }
}

/// Claims `key` for `operation` with the canonical request `request` (hashed), or says to replay.
/// Raises 55000 when the key was used for another operation or with other parameters.
pub fn claim(
    client: &mut SpiClient<'_>,
    organization: Uuid,
    key: &str,
    operation: &str,
    request: &str,
) -> Claim {
    validate_key(key);
    let ttl = IDEMPOTENCY_KEY_TTL.get();
    let args = || -> [pgrx::datum::DatumWithOid<'_>; 4] {
        [organization.into(), key.into(), request.into(), ttl.into()]
    };
    if let Some(row) = first_row(select(client, LOOKUP_SQL, Some(1), &args())) {
        let state = KeyState::read(&row);
        if !state.expired && state.status == "completed" {
            return state.replay(organization, key, operation);
        }
    }
    let claim = if crate::citus::distributed() {
        if !crate::citus::organization_exists(client, organization) {
            not_found(organization, key);
        }
        CLAIM_VALUES_SQL
    } else {
        CLAIM_SQL
    };
    let inserted = update(
        client,
        claim,
        None,
        &[
            organization.into(),
            key.into(),
            operation.into(),
            request.into(),
            ttl.into(),
        ],
    );
    let owned = || {
        Claim::Owned(Owned {
            organization,
            key: key.to_owned(),
        })
    };
    if first_row(inserted).is_some() {
        return owned();
    }
    // The key exists and its transaction has finished (the insert waited for it). Lock it: a
    // registered or expired key is re-claimed below, and only one caller may do that.
    let Some(row) = first_row(update(client, EXISTING_SQL, Some(1), &args())) else {
        // No key and nothing inserted: the organization does not exist. (A key deleted by cleanup
        // between the two statements lands here too; a retry inserts it afresh.)
        not_found(organization, key);
    };
    let state = KeyState::read(&row);
    if !state.expired && state.status == "completed" {
        return state.replay(organization, key, operation);
    }
    // Expired, or registered beforehand ('pending', the seed's flow), or left by another writer
    // without a committed answer: nobody is working on it (we hold its lock), so take it over.
    // A key bound to another operation or request stays refused until it expires.
    if !state.expired && state.status != "pending" {
        if state.operation.as_deref().is_some_and(|op| op != operation) {
            state.mismatch(organization, key, "another operation");
        }
        if state.same_request == Some(false) {
            state.mismatch(organization, key, "different parameters");
        }
    }
    update(
        client,
        RECLAIM_SQL,
        None,
        &[
            organization.into(),
            operation.into(),
            request.into(),
            ttl.into(),
            state.expired.into(),
            key.into(),
        ],
    );
    owned()
}

/// A row of LOOKUP_SQL / EXISTING_SQL.
struct KeyState {
    status: String,
    operation: Option<String>,
    same_request: Option<bool>,
    response: Option<serde_json::Value>,
    expired: bool,
}

impl KeyState {
    fn read(row: &pgrx::spi::SpiTupleTable<'_>) -> Self {
        KeyState {
            status: ok(row.get(1)).unwrap_or_default(),
            operation: ok(row.get(2)),
            same_request: ok(row.get(3)),
            response: ok(row.get::<JsonB>(4)).map(|r| r.0),
            expired: ok(row.get(5)).unwrap_or(false),
        }
    }

    /// A completed key: its answer with `"replayed": true`, or 55000 when the request differs.
    fn replay(self, organization: Uuid, key: &str, operation: &str) -> Claim {
        // A key import_seed brought from the seed has neither (its calls were the seed's): its
        // answer is replayed, as the seed replayed it.
        if self.operation.as_deref().is_some_and(|op| op != operation) {
            self.mismatch(organization, key, "another operation");
        }
        if self.same_request == Some(false) {
            self.mismatch(organization, key, "different parameters");
        }
        let mut replay = self.response.unwrap_or(serde_json::Value::Null);
        if let Some(object) = replay.as_object_mut() {
            object.insert("replayed".into(), true.into());
        }
        Claim::Replay(replay)
    }

    #[track_caller]
    fn mismatch(&self, organization: Uuid, key: &str, what: &str) -> ! {
        raise(
            Kind::KeyReused,
            format!("idempotency key was already used with {what}"),
            Some(format!(
                "organization_id: {organization}, key: {key}, operation: {}",
                self.operation.as_deref().unwrap_or("(none)")
            )),
            Some("Use a new idempotency key for a different request."),
        )
    }
}

/// Stores the final response with the key, in the same transaction as the work.
pub fn complete(client: &mut SpiClient<'_>, owned: &Owned, response: &serde_json::Value) {
    update(
        client,
        COMPLETE_SQL,
        None,
        &[
            owned.organization.into(),
            owned.key.as_str().into(),
            JsonB(response.clone()).into(),
        ],
    );
}

#[track_caller]
fn not_found(organization: Uuid, key: &str) -> ! {
    raise(
        Kind::NotFound,
        "organization not found",
        Some(format!("organization_id: {organization}, key: {key}")),
        None,
    )
}
