//! Key lookups straight through a btree index, without SPI and the executor.
//!
//! An SPI statement pays executor start-up and shut-down on every call, which for a handful of
//! key probes costs more than the probes (measured: 23 µs for check_trial_eligibility's one
//! statement of six probes). This module does what Postgres' own catalog code does
//! (`systable_beginscan`): open the table and index under AccessShareLock (kept to the end of the
//! transaction, as the executor keeps it), scan with equality keys under an MVCC snapshot, read
//! columns by name. Visibility, index-only correctness (the heap tuple is always fetched and
//! checked), SSI predicate locks and index statistics are the access methods' own, as for a query.
//! Nothing here checks privileges: only SECURITY DEFINER functions of the extension use it.
use crate::errors::{raise, Kind};
use pgrx::pg_sys;
use pgrx::{FromDatum, PgTupleDesc, Uuid};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;

/// Which rows a lookup sees.
#[derive(Clone, Copy)]
pub enum Snapshot {
    /// The calling statement's snapshot: what a read-only (STABLE) function's SPI query sees.
    Statement,
    /// A new snapshot after the transaction's earlier writes: what a VOLATILE function's SPI query
    /// sees (in READ COMMITTED, rows committed since the statement began).
    Latest,
}

/// An equality key on a column, by name.
pub enum Key<'a> {
    Uuid(&'a str, &'a Uuid),
    Text(&'a str, &'a str),
}

thread_local! {
    // Relation OIDs by the address of the &'static name (hashing an address is cheaper than
    // hashing the name), valid while no relation cache invalidation arrived since they were
    // looked up (a dropped or re-created extension, an ALTER EXTENSION UPDATE: each sends one).
    static OIDS: RefCell<HashMap<usize, (pg_sys::Oid, u64)>> = RefCell::new(HashMap::new());
    static GENERATION: Cell<u64> = const { Cell::new(1) };
}

/// Relation cache invalidation callback: forget every cached OID. Must not fail or allocate
/// through Postgres; bumping a counter does neither.
unsafe extern "C-unwind" fn invalidated(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    GENERATION.with(|g| g.set(g.get() + 1));
}

/// Registers the invalidation callback (once per backend; called from `_PG_init`).
pub fn init() {
    // SAFETY: registration at library load, before any lookup.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(invalidated), pg_sys::Datum::from(0)) };
}

/// A set of lookups under one snapshot. Dropping it closes the tables (locks kept) and pops the
/// snapshot it pushed.
pub struct Lookups {
    snapshot: pg_sys::Snapshot,
    pushed: bool,
    open: RefCell<Vec<pg_sys::Relation>>,
    locked_indexes: RefCell<Vec<pg_sys::Oid>>,
}

/// One table of schema checkout, open for lookups.
#[derive(Clone, Copy)]
pub struct Table {
    rel: pg_sys::Relation,
}

/// A row found by a lookup; valid only inside the callback it is passed to.
pub struct Row {
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
}

impl Lookups {
    pub fn begin(snapshot: Snapshot) -> Self {
        // SAFETY: plain calls into the snapshot manager of a backend inside a transaction.
        unsafe {
            let fresh = match snapshot {
                Snapshot::Latest => {
                    pg_sys::CommandCounterIncrement();
                    true
                }
                Snapshot::Statement => !pg_sys::ActiveSnapshotSet(),
            };
            if fresh {
                pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            }
            Lookups {
                snapshot: pg_sys::GetActiveSnapshot(),
                pushed: fresh,
                open: RefCell::new(Vec::new()),
                locked_indexes: RefCell::new(Vec::new()),
            }
        }
    }

    /// Opens `checkout.<name>` (a table) under AccessShareLock.
    pub fn table(&self, name: &'static CStr) -> Table {
        let oid = oid(name, pg_sys::RELKIND_RELATION);
        // SAFETY: a relation OID of the current catalog (the cache forgets OIDs on invalidation).
        let rel =
            unsafe { pg_sys::relation_open(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
        self.open.borrow_mut().push(rel);
        Table { rel }
    }

    /// Calls `each` with every row of `table` whose `keys` columns equal the given values, found
    /// through `index` (`checkout.<index>`, on `table`, with the key columns as its leading
    /// columns), until `each` returns false.
    pub fn scan(
        &self,
        table: Table,
        index: &'static CStr,
        keys: &[Key<'_>],
        mut each: impl FnMut(&Row) -> bool,
    ) {
        let index_oid = oid(index, pg_sys::RELKIND_INDEX);
        // Locked once and kept to the end of the transaction, as the executor keeps its index
        // locks: systable_beginscan/endscan then only count references instead of acquiring and
        // releasing the lock on every scan.
        if !self.locked_indexes.borrow().contains(&index_oid) {
            // SAFETY: an index OID of the current catalog.
            unsafe {
                pg_sys::LockRelationOid(index_oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE)
            };
            self.locked_indexes.borrow_mut().push(index_oid);
        }
        // SAFETY: `table.rel` is open and locked, systable_beginscan opens and locks the index;
        // the scan keys point at values (`keys` and the palloc'd texts) that outlive the scan; the
        // tuple handed to `each` is valid until the next systable_getnext, and `Row` cannot escape
        // the callback.
        unsafe {
            let desc = (*table.rel).rd_att;
            let mut scankeys: Vec<pg_sys::ScanKeyData> = Vec::with_capacity(keys.len());
            for key in keys {
                let (column, procedure, datum) = match key {
                    Key::Uuid(column, value) => (
                        *column,
                        pg_sys::F_UUID_EQ,
                        pg_sys::Datum::from(value.as_bytes().as_ptr()),
                    ),
                    Key::Text(column, value) => (
                        *column,
                        pg_sys::F_TEXTEQ,
                        pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
                            value.as_ptr().cast(),
                            value.len() as i32,
                        )),
                    ),
                };
                let (attnum, _, collation) = attribute(desc, column);
                let mut entry = pg_sys::ScanKeyData::default();
                // The heap column's number: systable_beginscan maps it to the index column (and
                // raises an error if the index does not have it). The column's collation is the
                // index's (our indexes declare none of their own).
                pg_sys::ScanKeyEntryInitialize(
                    &mut entry,
                    0,
                    attnum as pg_sys::AttrNumber,
                    pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                    pg_sys::InvalidOid,
                    collation,
                    pg_sys::Oid::from(procedure),
                    datum,
                );
                scankeys.push(entry);
            }
            let scan = pg_sys::systable_beginscan(
                table.rel,
                index_oid,
                true,
                self.snapshot,
                scankeys.len() as i32,
                scankeys.as_mut_ptr(),
            );
            let irel = (*scan).irel;
            if irel.is_null() || (*(*irel).rd_index).indrelid != (*table.rel).rd_id {
                missing(index);
            }
            loop {
                let tuple = pg_sys::systable_getnext(scan);
                if tuple.is_null() || !each(&Row { tuple, desc }) {
                    break;
                }
            }
            pg_sys::systable_endscan(scan);
        }
    }
}

impl Drop for Lookups {
    fn drop(&mut self) {
        // On an error the transaction's abort releases relations and snapshots itself.
        if std::thread::panicking() {
            return;
        }
        // SAFETY: the relations were opened by `table` and the snapshot pushed by `begin`.
        unsafe {
            for rel in self.open.get_mut().drain(..) {
                pg_sys::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            }
            if self.pushed {
                pg_sys::PopActiveSnapshot();
            }
        }
    }
}

impl Row {
    /// The value of `column`, which must be of type `expected` (None when NULL).
    fn datum(&self, column: &str, expected: pg_sys::Oid) -> Option<pg_sys::Datum> {
        let (attnum, type_oid, _) = attribute(self.desc, column);
        if type_oid != expected {
            raise(
                Kind::Internal,
                format!("checkout: column {column} has an unexpected type"),
                None,
                None,
            );
        }
        let mut is_null = false;
        // SAFETY: `tuple` and `desc` belong together and are valid inside the scan callback.
        let datum = unsafe { pg_sys::heap_getattr(self.tuple, attnum, self.desc, &mut is_null) };
        (!is_null).then_some(datum)
    }

    pub fn is_null(&self, column: &str) -> bool {
        let (attnum, _, _) = attribute(self.desc, column);
        // SAFETY: as in `datum`.
        unsafe { pg_sys::heap_attisnull(self.tuple, attnum, self.desc) }
    }

    /// A uuid column (None when NULL), copied.
    pub fn uuid(&self, column: &str) -> Option<Uuid> {
        // SAFETY: the datum is a uuid of a live tuple; from_datum copies its 16 bytes.
        self.datum(column, pg_sys::UUIDOID)
            .and_then(|d| unsafe { Uuid::from_datum(d, false) })
    }

    /// A text column (None when NULL), detoasted and copied.
    pub fn text(&self, column: &str) -> Option<String> {
        // SAFETY: the datum is a text of a live tuple; from_datum detoasts and copies it.
        self.datum(column, pg_sys::TEXTOID)
            .and_then(|d| unsafe { String::from_datum(d, false) })
    }
}

/// The attribute of `column` in `desc`: its number, type and collation. An unknown column is a
/// bug (schema and code disagree), reported as an error.
fn attribute(desc: pg_sys::TupleDesc, column: &str) -> (i32, pg_sys::Oid, pg_sys::Oid) {
    // SAFETY: `desc` is the valid tuple descriptor of an open relation, not ours to free.
    let desc = unsafe { PgTupleDesc::from_pg_unchecked(desc) };
    for (i, attr) in desc.iter().enumerate() {
        // NameData: the name, then NUL padding (compared as bytes: no UTF-8 check per column).
        let name = &attr.attname.data;
        let matches = column.len() < name.len()
            && name[column.len()] == 0
            && name.iter().zip(column.bytes()).all(|(&a, b)| a as u8 == b);
        if matches && !attr.is_dropped() {
            return (i as i32 + 1, attr.atttypid, attr.attcollation);
        }
    }
    raise(
        Kind::Internal,
        format!("checkout: column {column} is missing"),
        None,
        Some("Run ALTER EXTENSION checkout UPDATE, or re-create the extension."),
    );
}

/// The OID of `checkout.<name>`, a relation of the given kind, through the cache.
fn oid(name: &'static CStr, kind: u8) -> pg_sys::Oid {
    let generation = GENERATION.with(Cell::get);
    let key = name.as_ptr() as usize;
    if let Some((oid, seen)) = OIDS.with(|o| o.borrow().get(&key).copied()) {
        if seen == generation {
            return oid;
        }
    }
    // SAFETY: catalog lookups by name.
    let oid = unsafe {
        let schema = pg_sys::get_namespace_oid(c"checkout".as_ptr(), true);
        let oid = if schema == pg_sys::InvalidOid {
            pg_sys::InvalidOid
        } else {
            pg_sys::get_relname_relid(name.as_ptr(), schema)
        };
        if oid == pg_sys::InvalidOid || pg_sys::get_rel_relkind(oid) as u8 != kind {
            missing(name);
        }
        oid
    };
    // Stamped with the generation read before the lookup: an invalidation during it makes the
    // entry stale at once.
    OIDS.with(|o| o.borrow_mut().insert(key, (oid, generation)));
    oid
}

fn missing(name: &CStr) -> ! {
    raise(
        Kind::Internal,
        format!(
            "checkout: relation checkout.{} is missing",
            name.to_string_lossy()
        ),
        None,
        Some("Run ALTER EXTENSION checkout UPDATE, or re-create the extension."),
    );
}
