//! What checkout's native trigger functions share: the check that a function fires as its own
//! trigger (39P01 otherwise), reading and changing the trigger's rows, and the settings and text
//! forms their PL/pgSQL versions used.
//!
//! They are SECURITY DEFINER without `SET search_path` (saving and restoring that setting on every
//! call was most of their cost). So nothing here resolves a name through the caller's search_path,
//! and every statement they run names the schema of each table, function and operator.
use crate::errors::{raise, Kind};
use crate::plans::update;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{self, Oid, PgBuiltInOids, PgOid};
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiTupleTable};
use pgrx::tupdesc::PgTupleDesc;
use pgrx::Uuid;
use std::ffi::CStr;
use std::marker::PhantomData;
use std::num::NonZeroUsize;

/// What a native trigger function returns: the row to write (BEFORE), or nothing.
pub type Returned<'a> = Result<
    Option<pgrx::heap_tuple::PgHeapTuple<'a, pgrx::AllocatedByPostgres>>,
    std::convert::Infallible,
>;

/// Types of SPI arguments.
pub mod types {
    use pgrx::pg_sys::{PgBuiltInOids, PgOid};
    const fn oid(o: PgBuiltInOids) -> PgOid {
        PgOid::BuiltIn(o)
    }
    pub const UUID: PgOid = oid(PgBuiltInOids::UUIDOID);
    pub const TEXT: PgOid = oid(PgBuiltInOids::TEXTOID);
    pub const INT4: PgOid = oid(PgBuiltInOids::INT4OID);
    pub const INT8: PgOid = oid(PgBuiltInOids::INT8OID);
    pub const BOOL: PgOid = oid(PgBuiltInOids::BOOLOID);
    pub const TIMESTAMPTZ: PgOid = oid(PgBuiltInOids::TIMESTAMPTZOID);
    /// A whole row (OLD or NEW), passed as `record`: a kept plan must not name the table's row
    /// type, whose OID changes when the extension is re-created.
    pub const RECORD: PgOid = oid(PgBuiltInOids::RECORDOID);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum When {
    Before,
    After,
}

/// A row-level firing on checkout's own table, checked by [`fired`].
pub struct Firing<'a> {
    pub op: Op,
    /// NEW: absent on DELETE (every column reads as NULL, as PL/pgSQL's NEW did).
    pub new: Row<'a>,
    /// OLD: absent on INSERT.
    pub old: Row<'a>,
    /// On a shard, the settings of the statements the firing runs, until it returns.
    _routed: Option<crate::citus::Routed>,
}

/// Checks that `checkout.<function>()` fires as a row trigger of `checkout.<table>` at `when`, and
/// raises 39P01 otherwise: attached to another table (only the owner can attach it), it writes
/// nothing. The table is compared by OID, so a same-named table elsewhere is another table; on a
/// Citus node the trigger fires on the table's shards (`checkout.<table>_<shard id>`), which Citus
/// creates with the table's triggers.
pub fn fired<'a>(
    trigger: &'a PgTrigger<'a>,
    function: &str,
    table: &'static CStr,
    when: When,
) -> Firing<'a> {
    let data = trigger.trigger_data();
    let event = data.tg_event;
    // SAFETY: the relation of a firing trigger is open (at least AccessShareLock).
    let relation = unsafe { &*data.tg_relation };
    let timing = match when {
        When::Before => pg_sys::TRIGGER_EVENT_BEFORE,
        When::After => pg_sys::TRIGGER_EVENT_AFTER,
    };
    let own = crate::lookups::table_oid(table) == Some(relation.rd_id);
    let on_shard = !own && is_shard_of(relation, table);
    if !(own || on_shard)
        || event & pg_sys::TRIGGER_EVENT_ROW == 0
        || event & pg_sys::TRIGGER_EVENT_TIMINGMASK != timing
    {
        raise(
            Kind::TriggerProtocol,
            format!(
                "checkout.{function}() runs only as a trigger of checkout.{}",
                table.to_string_lossy()
            ),
            Some(format!("fired on {}", relation_shown(relation.rd_id))),
            None,
        );
    }
    let op = match event & pg_sys::TRIGGER_EVENT_OPMASK {
        pg_sys::TRIGGER_EVENT_INSERT => Op::Insert,
        pg_sys::TRIGGER_EVENT_UPDATE => Op::Update,
        pg_sys::TRIGGER_EVENT_DELETE => Op::Delete,
        // TRUNCATE fires for statements only, refused above.
        other => raise(
            Kind::Internal,
            format!("checkout: unexpected trigger event {other}"),
            None,
            None,
        ),
    };
    let (new, old) = match op {
        Op::Insert => (Some(data.tg_trigtuple), None),
        Op::Update => (Some(data.tg_newtuple), Some(data.tg_trigtuple)),
        Op::Delete => (None, Some(data.tg_trigtuple)),
    };
    Firing {
        op,
        new: Row::new(new, relation.rd_att),
        old: Row::new(old, relation.rd_att),
        _routed: on_shard.then(crate::citus::Routed::enter),
    }
}

/// Whether `relation` is a Citus shard of `checkout.<table>`: named `<table>_<shard id>` in schema
/// checkout (where only checkout's owner creates tables; Citus creates the shards as that owner).
fn is_shard_of(relation: &pg_sys::RelationData, table: &CStr) -> bool {
    // SAFETY: rd_rel of an open relation is its valid pg_class row; relname is NUL-terminated.
    let (name, namespace) = unsafe {
        let class = &*relation.rd_rel;
        (
            CStr::from_ptr(class.relname.data.as_ptr()),
            class.relnamespace,
        )
    };
    // SAFETY: a catalog cache lookup of a NUL-terminated name; missing_ok.
    let checkout = unsafe { pg_sys::get_namespace_oid(c"checkout".as_ptr(), true) };
    let (name, table) = (name.to_bytes(), table.to_bytes());
    namespace == checkout
        && name.len() > table.len() + 1
        && name.starts_with(table)
        && name[table.len()] == b'_'
        && name[table.len() + 1..].iter().all(u8::is_ascii_digit)
}

/// The relation as the PL/pgSQL functions wrote `TG_RELID::regclass` under their
/// `search_path = pg_catalog, pg_temp`: qualified unless visible there. Only on the error path, so
/// it sets that search_path for the moment of the call, as the SET clause did.
fn relation_shown(relid: Oid) -> String {
    // SAFETY: what fmgr_security_definer does around a call: a GUC nest level, the setting saved
    // and restored when the level is popped (also if an error aborts the transaction meanwhile).
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        let shown = shown(pg_sys::Datum::from(relid), pg_sys::REGCLASSOID);
        pg_sys::AtEOXact_GUC(true, level);
        shown
    }
}

/// A value as `format('%s', value)` writes it: the type's output function (a timestamptz follows
/// DateStyle and TimeZone, as it did in the PL/pgSQL functions' messages).
pub fn shown(datum: pg_sys::Datum, typ: Oid) -> String {
    // SAFETY: `datum` is a non-NULL value of type `typ`; the output function returns a palloc'd
    // NUL-terminated string.
    unsafe {
        let mut function = pg_sys::InvalidOid;
        let mut varlena = false;
        pg_sys::getTypeOutputInfo(typ, &mut function, &mut varlena);
        let text = pg_sys::OidOutputFunctionCall(function, datum);
        CStr::from_ptr(text).to_string_lossy().into_owned()
    }
}

/// A `%` parameter of PL/pgSQL's RAISE: NULL is written `<NULL>`.
pub fn raised(value: Option<&str>) -> &str {
    value.unwrap_or("<NULL>")
}

/// A `%s` of `format()`: NULL is written as nothing.
pub fn formatted<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// `nullif(current_setting(name, true), '')`, read the way current_setting reads it.
pub fn setting(name: &CStr) -> Option<String> {
    // SAFETY: missing_ok: NULL for an unknown setting, else a palloc'd NUL-terminated string.
    unsafe {
        let value = pg_sys::GetConfigOptionByName(name.as_ptr(), std::ptr::null_mut(), true);
        if value.is_null() {
            return None;
        }
        let value = CStr::from_ptr(value).to_string_lossy().into_owned();
        (!value.is_empty()).then_some(value)
    }
}

/// `now()`: the start of the transaction.
pub fn now() -> i64 {
    // SAFETY: reads a backend variable.
    unsafe { pg_sys::GetCurrentTransactionStartTimestamp() }
}

/// `a <> b` is true: both known and different (NULL compares as unknown, which IF treats as false).
pub fn differ<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}

/// An SPI argument of type `typ`, NULL when `datum` is None.
pub fn param(datum: Option<pg_sys::Datum>, typ: PgOid) -> DatumWithOid<'static> {
    match datum {
        // SAFETY: callers pass a value of type `typ` that lives until the statement has run.
        Some(datum) => unsafe { DatumWithOid::new(datum, typ.value()) },
        None => DatumWithOid::null_oid(typ.value()),
    }
}

/// Runs the kept plan of `sql` (prepared on first use, with the types `args` carry). Every
/// statement runs as a statement of a VOLATILE function does (`mutating`): after the previous one,
/// with a new snapshot.
#[track_caller]
pub fn run<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    args: &[DatumWithOid<'_>],
) -> SpiTupleTable<'conn> {
    update(client, sql, None, args)
}

/// OLD or NEW of a firing: a heap tuple of the trigger's relation, or absent.
pub struct Row<'a> {
    tuple: Option<pg_sys::HeapTuple>,
    desc: pg_sys::TupleDesc,
    _firing: PhantomData<&'a pg_sys::TriggerData>,
}

/// One column of a [`Row`]: its number and value (None: NULL, or the row is absent).
pub struct Col {
    pub attnum: NonZeroUsize,
    pub datum: Option<pg_sys::Datum>,
    typ: PgOid,
}

impl<'a> Row<'a> {
    fn new(tuple: Option<pg_sys::HeapTuple>, desc: pg_sys::TupleDesc) -> Self {
        Row {
            tuple: tuple.filter(|t| !t.is_null()),
            desc,
            _firing: PhantomData,
        }
    }

    pub fn is_present(&self) -> bool {
        self.tuple.is_some()
    }

    /// The column `name`, which must be of type `typ` (a table changed under checkout is a bug
    /// reported as such, not a value misread).
    pub fn col(&self, name: &CStr, typ: PgOid) -> Col {
        // SAFETY: `desc` is the relation's descriptor; SPI_fnumber only reads it (it needs no SPI
        // connection) and skips dropped columns.
        let number = unsafe { pg_sys::SPI_fnumber(self.desc, name.as_ptr()) };
        let attnum = usize::try_from(number).ok().and_then(NonZeroUsize::new);
        // SAFETY: as above; the descriptor outlives the firing and is not released here.
        let desc = unsafe { PgTupleDesc::from_pg_unchecked(self.desc) };
        let found = attnum.and_then(|n| desc.get(n.get() - 1).map(|a| (n, a.atttypid)));
        let attnum = match found {
            Some((n, actual)) if actual == typ.value() => n,
            _ => raise(
                Kind::Internal,
                format!(
                    "checkout: the trigger's table has no column {} of type {:?}",
                    name.to_string_lossy(),
                    typ.value()
                ),
                None,
                None,
            ),
        };
        // SAFETY: the tuple belongs to the firing and matches `desc`.
        let datum = self
            .tuple
            .and_then(|t| unsafe { pgrx::heap_getattr_raw(t, attnum, self.desc) });
        Col { attnum, datum, typ }
    }

    /// The whole row as an SPI argument of type `record` (NULL when absent), for
    /// `pg_catalog.to_jsonb($n)`: the same value as PL/pgSQL's `to_jsonb(NEW)`.
    pub fn composite(&self) -> DatumWithOid<'static> {
        // SAFETY: the tuple matches `desc`; the copy (TOASTed values inlined) is palloc'd in the
        // current context and carries the row type's OID.
        let datum = self
            .tuple
            .map(|t| unsafe { pg_sys::heap_copy_tuple_as_datum(t, self.desc) });
        param(datum, types::RECORD)
    }

    /// The row, unchanged, as a trigger returns it (None when absent).
    pub fn unchanged(&self) -> Option<PgHeapTuple<'a, AllocatedByPostgres>> {
        self.with(&[])
    }

    /// A copy of the row with `changes` (column number, value or NULL) applied, as a BEFORE
    /// trigger returns it. Call it outside `Spi::connect`: the copy must live in the trigger's
    /// memory context, not SPI's.
    pub fn with(
        &self,
        changes: &[(NonZeroUsize, Option<pg_sys::Datum>)],
    ) -> Option<PgHeapTuple<'a, AllocatedByPostgres>> {
        let tuple = self.tuple?;
        let tuple = if changes.is_empty() {
            tuple
        } else {
            // SAFETY: `desc` describes the tuple; the arrays have one entry per attribute.
            let natts = usize::try_from(unsafe { (*self.desc).natts }).unwrap_or(0);
            let mut values = vec![pg_sys::Datum::from(0usize); natts];
            let mut nulls = vec![false; natts];
            let mut replace = vec![false; natts];
            for (attnum, value) in changes {
                let i = attnum.get() - 1;
                if i < natts {
                    values[i] = value.unwrap_or(pg_sys::Datum::from(0usize));
                    nulls[i] = value.is_none();
                    replace[i] = true;
                }
            }
            // SAFETY: as above; heap_modify_tuple palloc's the new tuple, keeping t_self.
            unsafe {
                pg_sys::heap_modify_tuple(
                    tuple,
                    self.desc,
                    values.as_mut_ptr(),
                    nulls.as_mut_ptr(),
                    replace.as_mut_ptr(),
                )
            }
        };
        // SAFETY: a tuple of the relation, described by its descriptor (not reference-counted
        // here); Postgres frees it with the trigger's memory context.
        Some(unsafe {
            PgHeapTuple::from_heap_tuple(PgTupleDesc::from_pg_unchecked(self.desc), tuple)
        })
    }
}

impl Col {
    pub fn is_null(&self) -> bool {
        self.datum.is_none()
    }

    /// The value as an SPI argument of the column's type.
    pub fn param(&self) -> DatumWithOid<'static> {
        param(self.datum, self.typ)
    }

    /// A text column's value.
    pub fn text(&self) -> Option<String> {
        // SAFETY: a text datum of this row (detoasted as needed).
        self.datum.and_then(|d| unsafe {
            String::from_polymorphic_datum(d, false, PgBuiltInOids::TEXTOID.value())
        })
    }

    /// A uuid column's value.
    pub fn uuid(&self) -> Option<Uuid> {
        // SAFETY: a uuid datum of this row.
        self.datum.and_then(|d| unsafe {
            Uuid::from_polymorphic_datum(d, false, PgBuiltInOids::UUIDOID.value())
        })
    }

    /// A bigint or timestamptz column's value (timestamptz: microseconds since 2000, infinities
    /// as the extremes, so it compares as timestamptz does).
    pub fn int8(&self) -> Option<i64> {
        self.datum.map(|d| d.value() as i64)
    }

    /// The value as `format('%s')` writes it (NULL: nothing).
    pub fn shown(&self) -> String {
        self.datum
            .map(|d| shown(d, self.typ.value()))
            .unwrap_or_default()
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::{count, fixture, sqlstate_of, text};
    use crate::test_support::{CUSTOMER_A2, ORG_A, PRODUCT_A1, PRODUCT_A2, SUBSCRIPTION_A1};
    use pgrx::prelude::*;

    /// Look-alikes of the operators and functions the triggers' statements use, in a schema the
    /// caller puts before pg_catalog: a name resolved through the search_path raises or writes
    /// other values.
    const LOOK_ALIKES: &str = r#"
CREATE SCHEMA evil;
DO $$
DECLARE t text; o text;
BEGIN
  FOREACH t IN ARRAY ARRAY['uuid', 'text', 'timestamptz', 'int8', 'int4', 'jsonb'] LOOP
    EXECUTE format('CREATE FUNCTION evil.boom(%1$s, %1$s) RETURNS boolean LANGUAGE plpgsql
                    AS $f$BEGIN RAISE EXCEPTION ''evil operator''; END$f$', t);
    FOREACH o IN ARRAY ARRAY['=', '<>', '<', '<=', '>', '>=', '+', '-'] LOOP
      EXECUTE format('CREATE OPERATOR evil.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = evil.boom)', o, t, t);
    END LOOP;
  END LOOP;
END $$;
CREATE FUNCTION evil.arrow(jsonb, text) RETURNS jsonb LANGUAGE plpgsql
  AS $f$BEGIN RAISE EXCEPTION 'evil operator'; END$f$;
CREATE OPERATOR evil.-> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = evil.arrow);
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $f$SELECT '2000-01-01'::pg_catalog.timestamptz$f$;
CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE sql AS $f$SELECT 'evil'$f$;
CREATE FUNCTION evil.to_jsonb(anyelement) RETURNS jsonb LANGUAGE sql AS $f$SELECT '{}'::pg_catalog.jsonb$f$;
"#;

    const SUB_A2: &str = "d0000000-0000-0000-0000-0000000000a2";

    /// The six trigger functions run without SET search_path; a caller's search_path changes
    /// nothing they do, written or refused.
    #[pg_test]
    fn native_triggers_ignore_the_callers_search_path() {
        fixture();
        let functions = text(
            "SELECT string_agg(p.proname || ' ' || p.prosecdef || ' ' || (p.proconfig IS NULL) || ' ' || l.lanname, ', '
                               ORDER BY p.proname)
             FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
             WHERE p.pronamespace = 'checkout'::regnamespace AND p.prorettype = 'trigger'::regtype",
        );
        assert_eq!(
            functions,
            "audit_subscription_change true true c, guard_payment_refunded true true c, \
             guard_refund_status true true c, guard_subscription_update true true c, \
             merge_duplicate_email_variant true true c, track_customer_email true true c"
        );
        Spi::run(LOOK_ALIKES).unwrap();
        Spi::run("SET LOCAL search_path = evil, pg_catalog").unwrap();
        for write in [
            // Canceled (stamped, grant revoked, customer recounted), then reactivated.
            format!("UPDATE checkout.subscriptions SET status = 'canceled' WHERE id OPERATOR(pg_catalog.=) '{SUBSCRIPTION_A1}'"),
            format!("UPDATE checkout.subscriptions SET status = 'active' WHERE id OPERATOR(pg_catalog.=) '{SUBSCRIPTION_A1}'"),
            // A trial, moved to another product, converted, deleted.
            format!("INSERT INTO checkout.subscriptions (id, organization_id, customer_id, product_id, status, amount,
                       currency, interval, current_period_start, current_period_end)
                     VALUES ('{SUB_A2}', '{ORG_A}', '{CUSTOMER_A2}', '{PRODUCT_A1}', 'trialing', 0,
                       'usd', 'month', pg_catalog.now(), pg_catalog.now() OPERATOR(pg_catalog.+) interval '14 days')"),
            format!("UPDATE checkout.subscriptions SET product_id = '{PRODUCT_A2}'
                     WHERE id OPERATOR(pg_catalog.=) '{SUB_A2}'"),
            format!("UPDATE checkout.subscriptions SET status = 'active' WHERE id OPERATOR(pg_catalog.=) '{SUB_A2}'"),
            format!("DELETE FROM checkout.subscriptions WHERE id OPERATOR(pg_catalog.=) '{SUB_A2}'"),
            format!("UPDATE checkout.customers SET email = 'Bob.New@Example.com' WHERE id OPERATOR(pg_catalog.=) '{CUSTOMER_A2}'"),
            // A refund within the payment, succeeded; the payment lowered to what it still covers.
            format!("INSERT INTO checkout.refunds (organization_id, payment_intent_id, stripe_refund_id, amount, currency)
                     VALUES ('{ORG_A}', 'pi_1', 're_1', 600, 'usd')"),
            "UPDATE checkout.refunds SET status = 'succeeded' WHERE stripe_refund_id OPERATOR(pg_catalog.=) 're_1'".to_owned(),
            "UPDATE checkout.payment_intents SET amount = 700 WHERE stripe_payment_intent_id OPERATOR(pg_catalog.=) 'pi_1'".to_owned(),
        ] {
            Spi::run(&write).unwrap_or_else(|e| panic!("{write}: {e}"));
        }
        for (refused, code) in [
            (format!("INSERT INTO checkout.refunds (organization_id, payment_intent_id, stripe_refund_id, amount, currency)
                      VALUES ('{ORG_A}', 'pi_1', 're_2', 101, 'usd')"), "23514"),
            ("UPDATE checkout.payment_intents SET amount = 599 WHERE stripe_payment_intent_id OPERATOR(pg_catalog.=) 'pi_1'".to_owned(), "23514"),
            ("UPDATE checkout.refunds SET status = 'pending' WHERE stripe_refund_id OPERATOR(pg_catalog.=) 're_1'".to_owned(), "09000"),
            (format!("UPDATE checkout.subscriptions SET status = 'incomplete' WHERE id OPERATOR(pg_catalog.=) '{SUBSCRIPTION_A1}'"), "09000"),
        ] {
            assert_eq!(sqlstate_of(&refused), code, "{refused}");
        }
        Spi::run("RESET search_path").unwrap();
        let changes = |sub: &str| {
            text(&format!("SELECT string_agg(change_type, ' ' ORDER BY created_at) FROM checkout.subscription_changes
                           WHERE subscription_id = '{sub}'"))
        };
        assert_eq!(changes(SUBSCRIPTION_A1), "created updated updated");
        assert_eq!(changes(SUB_A2), "created updated updated deleted");
        // Only what changed (updated_at too is now(), the transaction's start, in a test).
        assert_eq!(
            text(&format!("SELECT string_agg(c.new_values::text, ' ' ORDER BY c.created_at) FROM checkout.subscription_changes c
                           WHERE c.subscription_id = '{SUB_A2}' AND c.change_type = 'updated'")),
            r#"{"product_id": "b0000000-0000-0000-0000-0000000000a2"} {"status": "active"}"#
        );
        assert_eq!(
            text(&format!("SELECT status || ' ' || (canceled_at IS NULL) || ' ' || (ended_at IS NULL) FROM checkout.subscriptions
                           WHERE id = '{SUBSCRIPTION_A1}'")),
            "active true true"
        );
        assert_eq!(
            count(&format!("SELECT count(*) FROM checkout.feature_grants WHERE subscription_id = '{SUBSCRIPTION_A1}' AND revoked_at IS NULL")),
            1
        );
        assert_eq!(
            text(&format!("SELECT string_agg(subscription_count || ' ' || has_active_subscription, ', ' ORDER BY id)
                           FROM checkout.customers WHERE organization_id = '{ORG_A}'")),
            "1 true, 0 false"
        );
        assert_eq!(
            text(&format!("SELECT string_agg(right(product_id::text, 2) || ' ' || converted || ' ' || (subscription_id IS NULL), ', '
                                             ORDER BY product_id)
                           FROM checkout.trial_history WHERE customer_id = '{CUSTOMER_A2}'")),
            "a1 false true, a2 true true"
        );
        assert_eq!(
            count(&format!("SELECT count(*) FROM checkout.customer_email_variants WHERE customer_id = '{CUSTOMER_A2}'
                              AND email_normalized = checkout.normalize_email(email) AND email_domain = 'example.com'")),
            2
        );
        assert_eq!(
            text("SELECT status || ' ' || (completed_at IS NOT NULL) FROM checkout.refunds WHERE stripe_refund_id = 're_1'"),
            "succeeded true"
        );
    }

    /// A trigger function fired on another table says where, as the PL/pgSQL functions did: the
    /// table qualified unless visible under `search_path = pg_catalog, pg_temp`, whatever the
    /// caller's search_path.
    #[pg_test]
    fn the_protocol_error_names_the_table_it_fired_on() {
        fixture();
        Spi::run(
            "CREATE TABLE public.borrowed (LIKE checkout.subscriptions INCLUDING DEFAULTS);
             CREATE TEMP TABLE subscriptions (LIKE checkout.subscriptions INCLUDING DEFAULTS);
             CREATE TRIGGER borrowed BEFORE UPDATE ON public.borrowed
               FOR EACH ROW EXECUTE FUNCTION checkout.guard_subscription_update();
             CREATE TRIGGER borrowed BEFORE UPDATE ON pg_temp.subscriptions
               FOR EACH ROW EXECUTE FUNCTION checkout.guard_subscription_update();
             INSERT INTO public.borrowed SELECT * FROM checkout.subscriptions;
             INSERT INTO pg_temp.subscriptions SELECT * FROM checkout.subscriptions;
             CREATE TEMP TABLE seen (n serial, what text);",
        )
        .unwrap();
        for (path, table) in [
            ("pg_catalog, pg_temp", "public.borrowed"),
            ("public", "public.borrowed"),
            ("public", "pg_temp.subscriptions"),
        ] {
            Spi::run(&format!(
                "SET LOCAL search_path = {path};
                 DO $$
                 DECLARE v_state text; v_message text; v_detail text;
                 BEGIN
                   UPDATE {table} SET status = 'canceled';
                 EXCEPTION WHEN OTHERS THEN
                   GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
                   INSERT INTO pg_temp.seen (what) VALUES (v_state || ' ' || v_message || ' / ' || v_detail);
                 END $$;
                 RESET search_path;"
            ))
            .unwrap();
        }
        let message = "39P01 checkout.guard_subscription_update() runs only as a trigger of checkout.subscriptions";
        assert_eq!(
            text("SELECT string_agg(what, ' | ' ORDER BY n) FROM pg_temp.seen"),
            format!("{message} / fired on public.borrowed | {message} / fired on public.borrowed | {message} / fired on subscriptions")
        );
        assert_eq!(
            count("SELECT count(*) FROM public.borrowed WHERE status = 'canceled'"),
            0
        );
    }
}
