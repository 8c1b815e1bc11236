//! The audit trail of subscriptions (seed migration 004), written by a trigger so no path skips it
//! (sql/lifecycle.sql). A checkout function tells the trigger what it is doing through a
//! per-backend context: the precise change type (cancelled, upgraded, ...), who and why. Direct SQL
//! has no context: its changes are recorded as `updated`, by the `checkout.actor` setting or the
//! database role.
use pgrx::prelude::*;
use pgrx::{is_a, JsonB, PgList, Uuid};
use serde_json::json;
use std::cell::RefCell;
use std::ffi::CStr;

extension_sql_file!(
    "../sql/lifecycle.sql",
    name = "lifecycle",
    requires = [
        "schema",
        invoking_role,
        subscription_audit_skipped,
        subscription_change_context,
        subscriptions::states::subscription_transition_allowed,
        subscriptions::states::subscription_transitions
    ]
);

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
/// function audits itself, or the rows are loaded by `COPY ... subscriptions FROM`, which is how
/// pg_restore reloads them (the dump carries their audit rows and counters). Only the statement
/// the client sent counts: a COPY of a query, or a COPY run inside a function, is audited.
#[pg_extern(volatile)]
fn subscription_audit_skipped() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|c| c.self_audited)) || restoring()
}

/// The client's statement (the active portal's only statement) is `COPY checkout.subscriptions FROM`.
fn restoring() -> bool {
    // SAFETY: ActivePortal is the portal the backend is running, or NULL; its statements are
    // PlannedStmt nodes, a utility one carrying the parsed CopyStmt.
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
        if !(*copy).is_from || (*copy).relation.is_null() || (*(*copy).relation).relname.is_null() {
            return false;
        }
        // The relation itself, not its name: a caller's own table named subscriptions (whose
        // column default calls a checkout function) must not switch the audit off.
        if CStr::from_ptr((*(*copy).relation).relname).to_bytes() != b"subscriptions" {
            return false;
        }
        let target = pg_sys::RangeVarGetRelidExtended(
            (*copy).relation,
            pg_sys::NoLock as pg_sys::LOCKMODE,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        );
        let schema = pg_sys::get_namespace_oid(c"checkout".as_ptr(), true);
        schema != pg_sys::InvalidOid
            && target != pg_sys::InvalidOid
            && target == pg_sys::get_relname_relid(c"subscriptions".as_ptr(), schema)
    }
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
