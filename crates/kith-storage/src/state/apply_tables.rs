//! [`ApplyTables`]: every table one apply transaction touches, as `kith_core::machine`'s
//! [`Tables`]: `meta`, the ledger and the kv tables at once, the rooms, jobs, files and token
//! tables on first use. Owns opening, and writing back what `meta` counts; refuses deciding
//! anything a command does (that is `kith_core::machine::apply`).

use openraft::LogId;
use redb::{Table, WriteTransaction};

use crate::state::files::RedbFiles;
use crate::state::history::StoreConfig;
use crate::state::jobs::RedbJobs;
use crate::state::kv::RedbKv;
use crate::state::ledger::{self, LedgerHead};
use crate::state::rooms::RedbRooms;
use crate::state::tables::{
    meta_get, meta_put, Membership, KEY_FILES_VERSION, KEY_JOB_NEXT_ID, KEY_KV_META,
    KEY_LAST_APPLIED, KEY_LEDGER_HEAD, KEY_MEMBERSHIP, LEDGER, META,
};
use crate::state::tokens::RedbTokens;
use crate::StoreError;
use kith_core::machine::Tables;
use kith_core::{KvMeta, NodeId};

/// What `meta` says of the applied state, carried through a batch and written back with it.
pub(crate) struct Applied {
    pub last_applied: Option<LogId<NodeId>>,
    pub kv_meta: KvMeta,
    pub head: LedgerHead,
    /// Set by a membership entry in the batch.
    pub membership: Option<Membership>,
}

/// The tables of one apply transaction.
pub(crate) struct ApplyTables<'t> {
    txn: &'t WriteTransaction,
    meta: Table<'t, &'static str, &'static [u8]>,
    pub ledger: Table<'t, u64, &'static [u8]>,
    kv: RedbKv<'t>,
    // The rooms, jobs and files tables are opened on first use: most batches touch none of
    // them, and opening (then closing, at commit) a table is not free.
    rooms: Option<RedbRooms<'t>>,
    jobs: Option<RedbJobs<'t>>,
    job_next_id_stored: u64,
    files: Option<RedbFiles<'t>>,
    files_version_stored: u64,
    tokens: Option<RedbTokens<'t>>,
    /// The earliest job timer as of the last commit. While the job tables are closed they
    /// are unchanged in this transaction, so it stays exact.
    job_timer_first_ms: Option<u64>,
}

impl<'t> ApplyTables<'t> {
    /// Opens `meta`, the ledger and the kv tables in `txn`; `job_timer_first_ms` is the
    /// earliest job timer the committed state holds.
    pub(crate) fn open(
        txn: &'t WriteTransaction,
        config: &StoreConfig,
        job_timer_first_ms: Option<u64>,
    ) -> Result<Self, StoreError> {
        let meta = txn.open_table(META)?;
        let ledger = txn.open_table(LEDGER)?;
        let kv = RedbKv::open(txn, &meta, config)?;
        Ok(ApplyTables {
            txn,
            meta,
            ledger,
            kv,
            rooms: None,
            jobs: None,
            job_next_id_stored: 0,
            files: None,
            files_version_stored: 0,
            tokens: None,
            job_timer_first_ms,
        })
    }

    /// The applied state as `meta` holds it at the start of the batch.
    pub(crate) fn applied(&self) -> Result<Applied, StoreError> {
        Ok(Applied {
            last_applied: meta_get(&self.meta, KEY_LAST_APPLIED)?.flatten(),
            kv_meta: meta_get(&self.meta, KEY_KV_META)?.unwrap_or_default(),
            head: meta_get(&self.meta, KEY_LEDGER_HEAD)?.unwrap_or_default(),
            membership: None,
        })
    }

    /// Trims the ledger and writes `applied` and every changed counter back to `meta`.
    /// Returns the earliest job timer as the transaction leaves it.
    pub(crate) fn finish(
        mut self,
        applied: &Applied,
        ledger_kept: u64,
    ) -> Result<Option<u64>, StoreError> {
        ledger::trim(&mut self.ledger, applied.head.index, ledger_kept)?;
        let meta = &mut self.meta;
        self.kv.store_counts(meta)?;
        meta_put(meta, KEY_LAST_APPLIED, &applied.last_applied)?;
        meta_put(meta, KEY_KV_META, &applied.kv_meta)?;
        let mut job_timer_first_ms = self.job_timer_first_ms;
        if let Some(jobs) = &self.jobs {
            if jobs.next_id != self.job_next_id_stored {
                meta_put(meta, KEY_JOB_NEXT_ID, &jobs.next_id)?;
            }
            job_timer_first_ms = jobs.first_timer_ms()?;
        }
        if let Some(files) = &self.files {
            if files.version != self.files_version_stored {
                meta_put(meta, KEY_FILES_VERSION, &files.version)?;
            }
        }
        meta_put(meta, KEY_LEDGER_HEAD, &applied.head)?;
        if let Some(m) = &applied.membership {
            meta_put(meta, KEY_MEMBERSHIP, m)?;
        }
        Ok(job_timer_first_ms)
    }
}

impl<'t> Tables for ApplyTables<'t> {
    type Error = StoreError;
    type Kv = RedbKv<'t>;
    type Rooms = RedbRooms<'t>;
    type Jobs = RedbJobs<'t>;
    type Files = RedbFiles<'t>;
    type Tokens = RedbTokens<'t>;

    fn kv(&mut self) -> &mut RedbKv<'t> {
        &mut self.kv
    }

    fn rooms(&mut self) -> Result<&mut RedbRooms<'t>, StoreError> {
        if self.rooms.is_none() {
            self.rooms = Some(RedbRooms::open(self.txn)?);
        }
        Ok(self.rooms.as_mut().expect("opened just above"))
    }

    fn jobs(&mut self) -> Result<&mut RedbJobs<'t>, StoreError> {
        if self.jobs.is_none() {
            self.job_next_id_stored = meta_get(&self.meta, KEY_JOB_NEXT_ID)?.unwrap_or(0);
            self.jobs = Some(RedbJobs::open(self.txn, self.job_next_id_stored)?);
        }
        Ok(self.jobs.as_mut().expect("opened just above"))
    }

    fn files(&mut self) -> Result<&mut RedbFiles<'t>, StoreError> {
        if self.files.is_none() {
            self.files_version_stored = meta_get(&self.meta, KEY_FILES_VERSION)?.unwrap_or(0);
            self.files = Some(RedbFiles::open(self.txn, self.files_version_stored)?);
        }
        Ok(self.files.as_mut().expect("opened just above"))
    }

    fn tokens(&mut self) -> Result<&mut RedbTokens<'t>, StoreError> {
        if self.tokens.is_none() {
            self.tokens = Some(RedbTokens::open(self.txn)?);
        }
        Ok(self.tokens.as_mut().expect("opened just above"))
    }

    fn job_timer_first_ms(&mut self) -> Result<Option<u64>, StoreError> {
        match &self.jobs {
            Some(jobs) => jobs.first_timer_ms(),
            None => Ok(self.job_timer_first_ms),
        }
    }
}
