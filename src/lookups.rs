//! Key lookups straight through a btree index, without SPI and the executor.
//!
//! An SPI statement pays executor start-up and shut-down on every call, which for a handful of
//! key probes costs more than the probes (measured: 23 µs for check_trial_eligibility's one
//! statement of six probes). This module does what an index-only scan node does, without the
//! node: open the table and index under AccessShareLock (kept to the end of the transaction, as the
//! executor keeps it), scan with equality keys under an MVCC snapshot, take what the index holds
//! from the index tuple where the visibility map says the heap page is all-visible, and fetch the
//! heap tuple elsewhere (for visibility) or for a column the index lacks. Visibility, SSI
//! predicate locks (page level where the heap is skipped, as the executor takes them) and index
//! statistics are the access methods' own, as for a query. Skipping the heap is what makes the
//! lookups cheap at scale: the heap pages of a million customers do not stay in shared buffers.
//! Nothing here checks privileges or row-level security: whoever may call a function that uses it
//! reads every tenant's rows (check_trial_eligibility: EXECUTE is revoked from PUBLIC; the tables
//! have no row-level security, and policies added to them would not apply here).
use crate::errors::{raise, Kind};
use pgrx::pg_sys;
use pgrx::{FromDatum, PgTupleDesc, Uuid};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::marker::PhantomData;

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

/// The relation cache generation: it changes whenever a relation cache invalidation (or a schema
/// change) arrives, so a value derived from the catalogs can be kept while it stays the same.
pub fn generation() -> u64 {
    GENERATION.with(Cell::get)
}

/// Relation cache invalidation callback: forget every cached OID. Must not fail or allocate
/// through Postgres; bumping a counter does neither.
unsafe extern "C-unwind" fn invalidated(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    GENERATION.with(|g| g.set(g.get() + 1));
}

/// The same for schema changes (a renamed schema sends no relation cache invalidation).
unsafe extern "C-unwind" fn schema_invalidated(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    GENERATION.with(|g| g.set(g.get() + 1));
}

/// Registers the invalidation callbacks (once per process; called from `_PG_init`).
pub fn init() {
    // SAFETY: registration at library load, before any lookup.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(invalidated), pg_sys::Datum::from(0));
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
            Some(schema_invalidated),
            pg_sys::Datum::from(0),
        );
    }
}

/// A set of lookups under one snapshot. Dropping it closes the tables (locks kept) and pops the
/// snapshot it pushed.
pub struct Lookups {
    snapshot: pg_sys::Snapshot,
    pushed: bool,
    open: RefCell<Vec<pg_sys::Relation>>,
    indexes: RefCell<Vec<(pg_sys::Oid, pg_sys::Relation)>>,
    /// On a Citus node: the shard of each table that holds the tenant's rows (`crate::citus`).
    shards: Vec<(&'static CStr, i64)>,
}

/// One table of schema checkout (or its shard), open for lookups while its `Lookups` lives.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    rel: pg_sys::Relation,
    /// The shard id when `rel` is a Citus shard: its indexes are named `<index>_<shard id>`.
    shard: Option<i64>,
    _open_in: PhantomData<&'a Lookups>,
}

/// A row found by a lookup; valid only inside the callback it is passed to.
pub struct Row<'s> {
    /// The table's tuple descriptor (columns are named and typed by it).
    desc: pg_sys::TupleDesc,
    source: Source<'s>,
}

enum Source<'s> {
    /// A heap tuple (the table was scanned).
    Heap(pg_sys::HeapTuple),
    /// An index tuple, with the index's columns (heap column numbers, 0 for an expression) and the
    /// way to its heap tuple, for the columns the index does not hold.
    Index {
        itup: pg_sys::IndexTuple,
        itupdesc: pg_sys::TupleDesc,
        columns: &'s [i16],
        fetch: &'s HeapFetch,
    },
}

/// The heap tuple of an index scan's current entry, fetched at most once per entry.
struct HeapFetch {
    scan: pg_sys::IndexScanDesc,
    slot: Cell<*mut pg_sys::TupleTableSlot>,
    fetched: Cell<bool>,
}

impl HeapFetch {
    /// Fetches the current entry's heap tuple into the slot: false when no version of it is
    /// visible to the scan's snapshot.
    ///
    /// # Safety
    /// The scan is open and positioned on an entry.
    unsafe fn fetch(&self) -> bool {
        // SAFETY: as the caller promises; the slot is made for the scan's table.
        unsafe {
            if self.slot.get().is_null() {
                self.slot.set(pg_sys::table_slot_create(
                    (*self.scan).heapRelation,
                    std::ptr::null_mut(),
                ));
            }
            let found = pg_sys::index_fetch_heap(self.scan, self.slot.get());
            self.fetched.set(found);
            found
        }
    }
}

unsafe extern "C-unwind" {
    // storage/predicate.h, which pgrx does not bind; called through pg_guard_ffi_boundary.
    fn PredicateLockPage(
        relation: pg_sys::Relation,
        blkno: pg_sys::BlockNumber,
        snapshot: pg_sys::Snapshot,
    );
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
                indexes: RefCell::new(Vec::new()),
                shards: Vec::new(),
            }
        }
    }

    /// The same on a Citus node: each table in `shards` is read through its shard, which must be
    /// on this node (a call delegated to its tenant's node finds it there).
    pub fn begin_on_shards(snapshot: Snapshot, shards: Vec<(&'static CStr, i64)>) -> Self {
        let mut lookups = Lookups::begin(snapshot);
        lookups.shards = shards;
        lookups
    }

    /// Opens `checkout.<name>` (a table, or the tenant's shard of it) under AccessShareLock.
    pub fn table(&self, name: &'static CStr) -> Table<'_> {
        let shard = self
            .shards
            .iter()
            .find(|(t, _)| *t == name)
            .map(|(_, s)| *s);
        let oid = match shard {
            None => locked(name, pg_sys::RELKIND_RELATION),
            Some(id) => shard_locked(name, id, pg_sys::RELKIND_RELATION),
        };
        // SAFETY: locked() holds AccessShareLock on a relation that still exists.
        let rel = unsafe { pg_sys::relation_open(oid, pg_sys::NoLock as pg_sys::LOCKMODE) };
        self.open.borrow_mut().push(rel);
        Table {
            rel,
            shard,
            _open_in: PhantomData,
        }
    }

    /// Whether `checkout.<index>` exists, belongs to `table` and has `column` as its first key
    /// column. Between a package update and `ALTER EXTENSION checkout UPDATE`, the library runs
    /// over an older release's keys: callers pick the lookup those keys allow.
    pub fn leads_with(&self, table: Table<'_>, index: &'static CStr, column: &str) -> bool {
        let exists = match table.shard {
            None => try_oid(index, pg_sys::RELKIND_INDEX).is_some(),
            Some(id) => shard_oid(index, id, pg_sys::RELKIND_INDEX).is_some(),
        };
        if !exists {
            return false;
        }
        let (irel, _) = self.index(table, index);
        let (attnum, _, _) = attribute(
            // SAFETY: `table` is open while its `Lookups` lives.
            unsafe { (*table.rel).rd_att },
            column,
        );
        // SAFETY: `irel` is open (this set of lookups keeps it); indkey has indnatts entries.
        unsafe {
            let form = (*irel).rd_index;
            (*form).indnkeyatts >= 1 && *(*form).indkey.values.as_ptr() as i32 == attnum
        }
    }

    /// Calls `each` with every row of `table` whose `keys` columns equal the given values, found
    /// through `index` (`checkout.<index>`, a valid btree index on `table` without a predicate,
    /// holding the key columns), until `each` returns false.
    ///
    /// Read as an index-only scan reads: a row on a heap page the visibility map marks all-visible
    /// is taken from the index tuple, and its heap tuple is fetched only when `each` reads a column
    /// the index does not hold; elsewhere the heap tuple is fetched to decide visibility.
    pub fn scan(
        &self,
        table: Table<'_>,
        index: &'static CStr,
        keys: &[Key<'_>],
        mut each: impl FnMut(&Row) -> bool,
    ) {
        let (irel, index_ok) = self.index(table, index);
        // SAFETY: `table.rel` and `irel` are open and locked; the scan keys point at values (`keys`
        // and the palloc'd texts) that outlive the scan; what a `Row` points at (the index tuple,
        // the heap tuple or slot) is valid until the next tuple is fetched, and `Row` cannot escape
        // the callback.
        unsafe {
            let desc = (*table.rel).rd_att;
            let mut scankeys = scan_keys(table, irel, index, keys);
            if !index_ok {
                // An index this snapshot may not use (indcheckxmin): the table is scanned instead,
                // by heap column numbers (slower, same rows).
                for key in scankeys.iter_mut() {
                    key.sk_attno = heap_column(irel, key.sk_attno);
                }
                let scan = pg_sys::systable_beginscan(
                    table.rel,
                    (*irel).rd_id,
                    false,
                    self.snapshot,
                    scankeys.len() as i32,
                    scankeys.as_mut_ptr(),
                );
                loop {
                    let tuple = pg_sys::systable_getnext(scan);
                    if tuple.is_null() || !each(&Row::heap(tuple, desc)) {
                        break;
                    }
                }
                pg_sys::systable_endscan(scan);
                return;
            }
            #[cfg(not(feature = "pg18"))]
            let scan =
                pg_sys::index_beginscan(table.rel, irel, self.snapshot, scankeys.len() as i32, 0);
            #[cfg(feature = "pg18")]
            let scan = pg_sys::index_beginscan(
                table.rel,
                irel,
                self.snapshot,
                std::ptr::null_mut(),
                scankeys.len() as i32,
                0,
            );
            (*scan).xs_want_itup = true;
            pg_sys::index_rescan(
                scan,
                scankeys.as_mut_ptr(),
                scankeys.len() as i32,
                std::ptr::null_mut(),
                0,
            );
            let form = (*irel).rd_index;
            let fetch = HeapFetch {
                scan,
                slot: Cell::new(std::ptr::null_mut()),
                fetched: Cell::new(false),
            };
            let mut vm_buffer: pg_sys::Buffer = pg_sys::InvalidBuffer as pg_sys::Buffer;
            loop {
                let tid =
                    pg_sys::index_getnext_tid(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tid.is_null() {
                    break;
                }
                let block = (((*tid).ip_blkid.bi_hi as u32) << 16) | (*tid).ip_blkid.bi_lo as u32;
                fetch.fetched.set(false);
                let all_visible = pg_sys::visibilitymap_get_status(table.rel, block, &mut vm_buffer)
                    as u32
                    & pg_sys::VISIBILITYMAP_ALL_VISIBLE
                    != 0;
                if all_visible {
                    // What the heap fetch would have taken under SERIALIZABLE (as an index-only
                    // scan does, at page level).
                    let snapshot = self.snapshot;
                    pg_sys::ffi::pg_guard_ffi_boundary(|| {
                        PredicateLockPage(table.rel, block, snapshot)
                    });
                } else if !fetch.fetch() {
                    continue; // not visible to this snapshot
                }
                let row = Row {
                    desc,
                    source: Source::Index {
                        itup: (*scan).xs_itup,
                        itupdesc: (*scan).xs_itupdesc,
                        columns: (*form).indkey.values.as_slice((*form).indnatts as usize),
                        fetch: &fetch,
                    },
                };
                if !each(&row) {
                    break;
                }
            }
            if vm_buffer != pg_sys::InvalidBuffer as pg_sys::Buffer {
                pg_sys::ReleaseBuffer(vm_buffer);
            }
            let slot = fetch.slot.get();
            if !slot.is_null() {
                pg_sys::ExecDropSingleTupleTableSlot(slot);
            }
            pg_sys::index_endscan(scan);
        }
    }

    /// `checkout.<name>`, opened once per set of lookups under AccessShareLock (kept to the end of
    /// the transaction, as the executor keeps its index locks: each scan then only counts a
    /// reference), checked to be a valid, ready btree index on `table` with no predicate: an index
    /// being rebuilt (CREATE INDEX CONCURRENTLY) or replaced by a partial one would miss rows.
    ///
    /// The flag says whether this snapshot may use it: an index built over broken HOT chains
    /// (indcheckxmin) is skipped, as the planner skips it, until its pg_index row is older than the
    /// transaction's xmin; the table is scanned instead.
    fn index(&self, table: Table<'_>, name: &'static CStr) -> (pg_sys::Relation, bool) {
        let oid = match table.shard {
            None => oid(name, pg_sys::RELKIND_INDEX),
            Some(id) => shard_oid(name, id, pg_sys::RELKIND_INDEX)
                .unwrap_or_else(|| shard_missing(name, id)),
        };
        if let Some(&(_, irel)) = self.indexes.borrow().iter().find(|(o, _)| *o == oid) {
            // SAFETY: an index this set of lookups opened.
            return (irel, unsafe { usable_by_snapshot(irel) });
        }
        let oid = match table.shard {
            None => locked(name, pg_sys::RELKIND_INDEX),
            Some(id) => shard_locked(name, id, pg_sys::RELKIND_INDEX),
        };
        // SAFETY: locked() holds AccessShareLock on an index that still exists; the checks read
        // the open index's relcache entry.
        unsafe {
            let irel = pg_sys::index_open(oid, pg_sys::NoLock as pg_sys::LOCKMODE);
            let form = (*irel).rd_index;
            let usable = (*form).indrelid == (*table.rel).rd_id
                && (*form).indisvalid
                && (*form).indisready
                && (*(*irel).rd_rel).relam == pg_sys::BTREE_AM_OID
                && pg_sys::heap_attisnull(
                    (*irel).rd_indextuple,
                    pg_sys::Anum_pg_index_indpred as i32,
                    std::ptr::null_mut(),
                );
            if !usable {
                pg_sys::index_close(irel, pg_sys::NoLock as pg_sys::LOCKMODE);
                raise(
                    Kind::Internal,
                    format!(
                        "checkout: index checkout.{} is not usable",
                        name.to_string_lossy()
                    ),
                    Some("It is not a valid btree index of its table without a predicate (being rebuilt, or replaced).".into()),
                    Some("Wait for a concurrent index build to finish, or run ALTER EXTENSION checkout UPDATE."),
                );
            }
            self.indexes.borrow_mut().push((oid, irel));
            (irel, usable_by_snapshot(irel))
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
            for (_, irel) in self.indexes.get_mut().drain(..) {
                pg_sys::index_close(irel, pg_sys::NoLock as pg_sys::LOCKMODE);
            }
            for rel in self.open.get_mut().drain(..) {
                pg_sys::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            }
            if self.pushed {
                debug_assert!(pg_sys::GetActiveSnapshot() == self.snapshot);
                pg_sys::PopActiveSnapshot();
            }
        }
    }
}

impl Row<'_> {
    fn heap(tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc) -> Row<'static> {
        Row {
            desc,
            source: Source::Heap(tuple),
        }
    }

    /// The value of `column` (None when NULL) and its type.
    fn value(&self, column: &str) -> (Option<pg_sys::Datum>, pg_sys::Oid) {
        let (attnum, type_oid, _) = attribute(self.desc, column);
        let mut is_null = false;
        // SAFETY: the tuples and descriptors belong together and are valid inside the scan
        // callback; an index column holding a heap column has that column's type.
        let datum = unsafe {
            match &self.source {
                Source::Heap(tuple) => {
                    pg_sys::heap_getattr(*tuple, attnum, self.desc, &mut is_null)
                }
                Source::Index {
                    itup,
                    itupdesc,
                    columns,
                    fetch,
                } => match columns.iter().position(|&c| c as i32 == attnum) {
                    Some(position) => {
                        // index_getattr is a static inline before PostgreSQL 16; deforming the
                        // few columns of these indexes costs as little.
                        let mut values = [pg_sys::Datum::from(0); pg_sys::INDEX_MAX_KEYS as usize];
                        let mut nulls = [false; pg_sys::INDEX_MAX_KEYS as usize];
                        pg_sys::index_deform_tuple(
                            *itup,
                            *itupdesc,
                            values.as_mut_ptr(),
                            nulls.as_mut_ptr(),
                        );
                        is_null = nulls[position];
                        values[position]
                    }
                    None => {
                        // All-visible page, so the fetch finds the tuple the entry points at.
                        if !fetch.fetched.get() && !fetch.fetch() {
                            raise(
                                Kind::Internal,
                                "checkout: an index entry of an all-visible page has no heap tuple",
                                None,
                                None,
                            );
                        }
                        pg_sys::slot_getattr(fetch.slot.get(), attnum, &mut is_null)
                    }
                },
            }
        };
        ((!is_null).then_some(datum), type_oid)
    }

    /// The value of `column`, which must be of type `expected` (None when NULL).
    fn datum(&self, column: &str, expected: pg_sys::Oid) -> Option<pg_sys::Datum> {
        let (datum, type_oid) = self.value(column);
        if type_oid != expected {
            raise(
                Kind::Internal,
                format!("checkout: column {column} has an unexpected type"),
                None,
                None,
            );
        }
        datum
    }

    pub fn is_null(&self, column: &str) -> bool {
        self.value(column).0.is_none()
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

/// Equality scan keys on `index`'s columns (index column numbers), for `keys` on `table`'s columns.
///
/// # Safety
/// `table` and `irel` are open; the keys point at `keys`' values, which must outlive the scan.
unsafe fn scan_keys(
    table: Table<'_>,
    irel: pg_sys::Relation,
    index: &CStr,
    keys: &[Key<'_>],
) -> Vec<pg_sys::ScanKeyData> {
    // SAFETY: as the caller promises.
    unsafe {
        let desc = (*table.rel).rd_att;
        let form = (*irel).rd_index;
        let columns = (*form).indkey.values.as_slice((*form).indnkeyatts as usize);
        let mut scankeys: Vec<pg_sys::ScanKeyData> = Vec::with_capacity(keys.len());
        for key in keys {
            let (column, type_oid, procedure, datum) = match key {
                Key::Uuid(column, value) => (
                    *column,
                    pg_sys::UUIDOID,
                    pg_sys::F_UUID_EQ,
                    pg_sys::Datum::from(value.as_bytes().as_ptr()),
                ),
                Key::Text(column, value) => (
                    *column,
                    pg_sys::TEXTOID,
                    pg_sys::F_TEXTEQ,
                    pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
                        value.as_ptr().cast(),
                        value.len() as i32,
                    )),
                ),
            };
            let (attnum, actual_type, _) = attribute(desc, column);
            // The comparison runs the index's function on the key's bytes: a key of another type
            // would be read as garbage.
            let position = columns.iter().position(|&c| c as i32 == attnum);
            let Some(position) = position.filter(|_| actual_type == type_oid) else {
                raise(
                    Kind::Internal,
                    format!(
                        "checkout: {} cannot be looked up by {column}",
                        index.to_string_lossy()
                    ),
                    None,
                    Some("Run ALTER EXTENSION checkout UPDATE, or re-create the extension."),
                );
            };
            let mut entry = pg_sys::ScanKeyData::default();
            // The index column's collation: btree compares with the key's.
            pg_sys::ScanKeyEntryInitialize(
                &mut entry,
                0,
                (position + 1) as pg_sys::AttrNumber,
                pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                pg_sys::InvalidOid,
                *(*irel).rd_indcollation.add(position),
                pg_sys::Oid::from(procedure),
                datum,
            );
            scankeys.push(entry);
        }
        scankeys
    }
}

/// The heap column an index column (1-based) holds.
///
/// # Safety
/// `irel` is open and the column is one of its key columns.
unsafe fn heap_column(irel: pg_sys::Relation, column: pg_sys::AttrNumber) -> pg_sys::AttrNumber {
    // SAFETY: as the caller promises.
    unsafe {
        *(*(*irel).rd_index)
            .indkey
            .values
            .as_ptr()
            .add(column as usize - 1)
    }
}

/// Whether the transaction's snapshots may use `irel` (the planner's indcheckxmin rule).
unsafe fn usable_by_snapshot(irel: pg_sys::Relation) -> bool {
    // SAFETY: `irel` is open; its pg_index tuple is in the relcache entry.
    unsafe {
        !(*(*irel).rd_index).indcheckxmin
            || pg_sys::TransactionIdPrecedes(
                pg_sys::htup::HeapTupleHeaderGetXmin((*(*irel).rd_indextuple).t_data),
                pg_sys::TransactionXmin,
            )
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

/// The OID of `checkout.<name>` (a relation of the given kind), locked in AccessShareLock. The
/// name is looked up again once the lock is granted, as PostgreSQL's own name lookup does
/// (RangeVarGetRelidExtended): a relation dropped, or dropped and re-created, while the call
/// waited for the lock is not opened by a stale OID (XX000 "could not open relation").
fn locked(name: &'static CStr, kind: u8) -> pg_sys::Oid {
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    let mut oid = oid(name, kind);
    // Two tries: the cached OID, then the one the name has after the first wait.
    for _ in 0..2 {
        // SAFETY: locking an OID that may have gone away is allowed (the lock manager keys on the
        // number); taking the lock processes pending invalidations, so try_oid below reads the
        // catalog as of now.
        unsafe { pg_sys::LockRelationOid(oid, lock) };
        match try_oid(name, kind) {
            Some(now) if now == oid => return oid,
            now => {
                // SAFETY: the lock taken above.
                unsafe { pg_sys::UnlockRelationOid(oid, lock) };
                oid = now.unwrap_or_else(|| missing(name));
            }
        }
    }
    missing(name)
}

/// The OID of the Citus shard `checkout.<name>_<shard>` (a relation of the given kind), locked in
/// AccessShareLock and looked up again once the lock is granted, as `locked` does. Not cached:
/// shards move between nodes.
fn shard_locked(name: &'static CStr, shard: i64, kind: u8) -> pg_sys::Oid {
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    let Some(oid) = shard_oid(name, shard, kind) else {
        shard_missing(name, shard)
    };
    // SAFETY: as in locked().
    unsafe { pg_sys::LockRelationOid(oid, lock) };
    if shard_oid(name, shard, kind) != Some(oid) {
        // SAFETY: the lock taken above.
        unsafe { pg_sys::UnlockRelationOid(oid, lock) };
        shard_missing(name, shard)
    }
    oid
}

/// The OID of `checkout.<name>_<shard>`, a relation of the given kind, if this node has it.
fn shard_oid(name: &CStr, shard: i64, kind: u8) -> Option<pg_sys::Oid> {
    let shard_name = std::ffi::CString::new(format!("{}_{shard}", name.to_string_lossy())).ok()?;
    // SAFETY: catalog lookups by NUL-terminated names.
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"checkout".as_ptr(), true);
        if schema == pg_sys::InvalidOid {
            return None;
        }
        let oid = pg_sys::get_relname_relid(shard_name.as_ptr(), schema);
        (oid != pg_sys::InvalidOid && pg_sys::get_rel_relkind(oid) as u8 == kind).then_some(oid)
    }
}

#[track_caller]
fn shard_missing(name: &CStr, shard: i64) -> ! {
    raise(
        Kind::NotOnThisCluster,
        format!(
            "checkout: the tenant's shard checkout.{}_{shard} is not on this node",
            name.to_string_lossy()
        ),
        None,
        Some("Call checkout's functions through the coordinator of a cluster distributed by checkout.distribute(): each runs on its tenant's node."),
    )
}

/// The OID of `checkout.<name>`, a relation of the given kind, through the cache.
#[track_caller]
fn oid(name: &'static CStr, kind: u8) -> pg_sys::Oid {
    try_oid(name, kind).unwrap_or_else(|| missing(name))
}

/// The OID of the table `checkout.<name>`, None when there is none; cached as [`oid`].
pub fn table_oid(name: &'static CStr) -> Option<pg_sys::Oid> {
    try_oid(name, pg_sys::RELKIND_RELATION)
}

/// The same, None when there is no such relation (not cached: looked up again next time).
fn try_oid(name: &'static CStr, kind: u8) -> Option<pg_sys::Oid> {
    let generation = GENERATION.with(Cell::get);
    let key = name.as_ptr() as usize;
    if let Some((oid, seen)) = OIDS.with(|o| o.borrow().get(&key).copied()) {
        if seen == generation {
            return Some(oid);
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
            return None;
        }
        oid
    };
    // Stamped with the generation read before the lookup: an invalidation during it makes the
    // entry stale at once.
    OIDS.with(|o| o.borrow_mut().insert(key, (oid, generation)));
    Some(oid)
}

#[track_caller]
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
