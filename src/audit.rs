//! The audit trail of subscriptions (seed migration 004), written by a trigger so no path skips it
//! (src/subscriptions/triggers.rs, which loads sql/lifecycle.sql, the file that attaches it). A checkout function tells the
//! trigger what it is doing through a per-backend context: the precise change type (cancelled,
//! upgraded, ...), who and why. Direct SQL has no context: its changes are recorded as `updated`,
//! by the `checkout.actor` setting or the database role.
use pgrx::prelude::*;
use pgrx::{is_a, JsonB, PgList, Uuid};
use serde_json::json;
use std::cell::RefCell;
use std::ffi::CStr;

pub mod trigger;

/// What the running checkout function is doing to subscriptions.
pub struct Change {
    pub change_type: &'static str,
    pub changed_by: Option<Uuid>,
    pub reason: Option<String>,
    /// The function writes its audit row and counters itself (create_subscription_atomic does, in
    /// its one statement): the trigger stays out.
    pub self_audited: bool,
}

thread_local! {
    static CURRENT: RefCell<Option<Change>> = const { RefCell::new(None) };
}

/// Holds the context while a function writes; dropped (also when an error unwinds) it clears it,
/// so later direct SQL in the session is never attributed to the function.
pub struct Scope(());

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

pub fn begin(change: Change) -> Scope {
    CURRENT.with(|c| *c.borrow_mut() = Some(change));
    Scope(())
}

/// The role the caller acts as: outside SECURITY DEFINER functions (what `current_user` says in
/// the caller's own statements), so the audit names the application's role, not the owner.
#[pg_extern(stable, parallel_safe)]
fn invoking_role() -> Option<String> {
    // SAFETY: plain catalog lookups; noerr = true returns NULL for a dropped role.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), true);
        (!name.is_null()).then(|| CStr::from_ptr(name).to_string_lossy().into_owned())
    }
}

/// Whether the subscriptions audit trigger has nothing to do for this row: the calling checkout
/// function audits itself, or pg_restore is reloading the table (see [`restoring`]).
#[pg_extern(volatile)]
fn subscription_audit_skipped() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|c| c.self_audited))
        || restoring_copy_into(b"subscriptions")
}

/// `checkout.restoring(p_table)`: whether the rows being written are pg_restore reloading
/// `checkout.<p_table>`, so that the triggers that derive, stamp or bound rows stand aside (the
/// dump already holds what they would write, and a restore must reproduce the rows exactly). True
/// only when the client's statement (the active portal's only statement) is `COPY
/// checkout.<p_table> FROM`, qualified as pg_dump writes it, run by a superuser: a COPY into
/// another table of that name, one resolved through `search_path`, a COPY of a query or one run
/// inside a function is not a restore.
#[pg_extern(volatile)]
fn restoring(p_table: &str) -> bool {
    restoring_copy_into(p_table.as_bytes())
}

fn restoring_copy_into(table: &[u8]) -> bool {
    // SAFETY: ActivePortal is the portal the backend is running, or NULL; its statements are
    // PlannedStmt nodes, a utility one carrying the parsed CopyStmt, whose RangeVar names are
    // NUL-terminated strings (or NULL).
    unsafe {
        let portal = pg_sys::ActivePortal;
        if portal.is_null() {
            return false;
        }
        let stmts = PgList::<pg_sys::PlannedStmt>::from_pg((*portal).stmts);
        let (1, Some(stmt)) = (stmts.len(), stmts.head()) else {
            return false;
        };
        let utility = (*stmt).utilityStmt;
        if utility.is_null() || !is_a(utility, pg_sys::NodeTag::T_CopyStmt) {
            return false;
        }
        let copy = utility as *mut pg_sys::CopyStmt;
        let relation = (*copy).relation;
        if !(*copy).is_from || relation.is_null() {
            return false;
        }
        // By its written name, schema included: no search_path (which a function's SET clause can
        // change between the COPY and this check) decides what it means.
        let named = |name: *mut std::ffi::c_char, want: &[u8]| {
            !name.is_null() && CStr::from_ptr(name).to_bytes() == want
        };
        named((*relation).schemaname, b"checkout")
            && named((*relation).relname, table)
            && (*relation).catalogname.is_null()
            && pg_sys::superuser()
    }
}

/// What the running function says of its change, for the audit trigger: (change type, changed_by,
/// reason); None for direct SQL. The values `subscription_change_context()` shows.
pub fn current_change() -> Option<(&'static str, Option<Uuid>, Option<String>)> {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .map(|c| (c.change_type, c.changed_by, c.reason.clone()))
    })
}

/// The running function's context for the trigger, NULL when there is none (direct SQL).
#[pg_extern(volatile)]
fn subscription_change_context() -> Option<JsonB> {
    CURRENT.with(|c| {
        c.borrow().as_ref().map(|c| {
            JsonB(json!({
                "change_type": c.change_type,
                "changed_by": c.changed_by.map(|u| u.to_string()),
                "reason": c.reason,
            }))
        })
    })
}
