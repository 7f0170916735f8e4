//! The job-queue domain on redb: [`RedbJobs`], which backs `kith_core`'s [`JobTable`] inside
//! an apply's write transaction, the indexes a snapshot install rebuilds ([`index_job`]), and
//! the job queries of [`StateReader`].

use redb::{Database, ReadableDatabase, ReadableTable, Table, WriteTransaction};

use crate::codec::{decode, encode};
use crate::state::reader::StateReader;
use crate::state::tables::{JOBS, JOB_KEYS, JOB_READY, JOB_STATS, JOB_TIMERS};
use crate::StoreError;
use kith_core::jobs::{self, Job, JobTable, QueueStats};

/// Backs [`JobTable`] with open redb tables inside one write transaction.
pub(crate) struct RedbJobs<'t> {
    jobs: Table<'t, u64, &'static [u8]>,
    ready: Table<'t, (&'static str, u8, u64), ()>,
    timers: Table<'t, (u64, u64), ()>,
    keys: Table<'t, (&'static str, &'static str), u64>,
    stats: Table<'t, &'static str, &'static [u8]>,
    /// Next id to hand out; written back to `meta` when the batch commits.
    pub(crate) next_id: u64,
}

impl<'t> RedbJobs<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction, next_id: u64) -> Result<Self, StoreError> {
        Ok(RedbJobs {
            jobs: txn.open_table(JOBS)?,
            ready: txn.open_table(JOB_READY)?,
            timers: txn.open_table(JOB_TIMERS)?,
            keys: txn.open_table(JOB_KEYS)?,
            stats: txn.open_table(JOB_STATS)?,
            next_id,
        })
    }

    /// When the earliest timer is set for, as this transaction sees it.
    pub(crate) fn first_timer_ms(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.timers.first()?.map(|(k, _)| k.value().0))
    }
}

impl JobTable for RedbJobs<'_> {
    type Error = StoreError;
    fn next_id(&mut self) -> Result<u64, StoreError> {
        self.next_id += 1;
        Ok(self.next_id)
    }
    fn get(&mut self, id: u64) -> Result<Option<Job>, StoreError> {
        match self.jobs.get(id)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }
    fn put(&mut self, job: &Job) -> Result<(), StoreError> {
        self.jobs.insert(job.id, encode(job)?.as_slice())?;
        Ok(())
    }
    fn remove(&mut self, id: u64) -> Result<(), StoreError> {
        self.jobs.remove(id)?;
        Ok(())
    }
    fn ready_add(&mut self, queue: &str, rank: u8, id: u64) -> Result<(), StoreError> {
        self.ready.insert((queue, rank, id), ())?;
        Ok(())
    }
    fn ready_remove(&mut self, queue: &str, rank: u8, id: u64) -> Result<(), StoreError> {
        self.ready.remove((queue, rank, id))?;
        Ok(())
    }
    fn ready_first(&mut self, queue: &str) -> Result<Option<u64>, StoreError> {
        let first = self
            .ready
            .range((queue, 0u8, 0u64)..=(queue, u8::MAX, u64::MAX))?
            .next()
            .transpose()?
            .map(|(k, _)| k.value().2);
        Ok(first)
    }
    fn timer_add(&mut self, at_ms: u64, id: u64) -> Result<(), StoreError> {
        self.timers.insert((at_ms, id), ())?;
        Ok(())
    }
    fn timer_remove(&mut self, at_ms: u64, id: u64) -> Result<(), StoreError> {
        self.timers.remove((at_ms, id))?;
        Ok(())
    }
    fn timers_due(&mut self, now_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut due = Vec::new();
        for item in self
            .timers
            .range((0u64, 0u64)..=(now_ms, u64::MAX))?
            .take(limit)
        {
            due.push(item?.0.value());
        }
        Ok(due)
    }
    fn idempotent(&mut self, queue: &str, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.keys.get((queue, key))?.map(|v| v.value()))
    }
    fn idempotent_put(
        &mut self,
        queue: &str,
        key: &str,
        id: Option<u64>,
    ) -> Result<(), StoreError> {
        match id {
            Some(id) => self.keys.insert((queue, key), id)?,
            None => self.keys.remove((queue, key))?,
        };
        Ok(())
    }
    fn stats(&mut self, queue: &str) -> Result<QueueStats, StoreError> {
        match self.stats.get(queue)? {
            Some(v) => Ok(decode(v.value())?),
            None => Ok(QueueStats::default()),
        }
    }
    fn stats_put(&mut self, queue: &str, stats: &QueueStats) -> Result<(), StoreError> {
        self.stats.insert(queue, encode(stats)?.as_slice())?;
        Ok(())
    }
    fn stats_remove(&mut self, queue: &str) -> Result<bool, StoreError> {
        Ok(self.stats.remove(queue)?.is_some())
    }
    fn idempotent_clear(&mut self, queue: &str) -> Result<(), StoreError> {
        // Keys sort by queue first: this queue's keys are one run from (queue, "").
        let mut mine = Vec::new();
        for item in self.keys.range((queue, "")..)? {
            let (k, _) = item?;
            let (q, key) = k.value();
            if q != queue {
                break;
            }
            mine.push(key.to_owned());
        }
        for key in mine {
            self.keys.remove((queue, key.as_str()))?;
        }
        Ok(())
    }
}

/// Where a job sits in the indexes, rebuilt from the job itself on snapshot install.
pub(crate) fn index_job(
    job: &Job,
    ready: &mut Table<'_, (&'static str, u8, u64), ()>,
    timers: &mut Table<'_, (u64, u64), ()>,
    keys: &mut Table<'_, (&'static str, &'static str), u64>,
) -> Result<(), StoreError> {
    use kith_core::jobs::JobState;
    match job.state {
        JobState::Ready => {
            ready.insert(
                (
                    job.queue.as_str(),
                    jobs::PRIORITY_MAX - job.priority,
                    job.id,
                ),
                (),
            )?;
        }
        JobState::Delayed => {
            timers.insert((job.run_at_ms, job.id), ())?;
        }
        JobState::Leased => {
            if let Some(l) = &job.lease {
                timers.insert((l.until_ms, job.id), ())?;
            }
        }
        JobState::Completed | JobState::Cancelled => {
            if let Some(at) = job.expires_ms {
                timers.insert((at, job.id), ())?;
            }
        }
        JobState::Dead => {}
    }
    if let Some(key) = &job.idempotency_key {
        keys.insert((job.queue.as_str(), key.as_str()), job.id)?;
    }
    Ok(())
}

/// When the earliest job timer in `db` is set for.
pub(crate) fn read_job_timer_first_ms(db: &Database) -> Result<Option<u64>, StoreError> {
    let txn = db.begin_read()?;
    let timers = txn.open_table(JOB_TIMERS)?;
    let first = timers.first()?.map(|(k, _)| k.value().0);
    Ok(first)
}

impl StateReader {
    /// One job, if it exists.
    pub fn job(&self, id: u64) -> Result<Option<Job>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOBS)?;
        let found = match table.get(id)? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        Ok(found)
    }

    /// Every queue with its counts, in name order (at most `limit`).
    pub fn queues(&self, limit: usize) -> Result<Vec<(String, QueueStats)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOB_STATS)?;
        let mut out = Vec::new();
        for item in table.iter()?.take(limit) {
            let (k, v) = item?;
            out.push((k.value().to_owned(), decode(v.value())?));
        }
        Ok(out)
    }

    /// Whether `queue` has a job ready to claim right now.
    pub fn has_ready(&self, queue: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOB_READY)?;
        let mut range = table.range((queue, 0u8, 0u64)..=(queue, u8::MAX, u64::MAX))?;
        Ok(range.next().is_some())
    }

    /// Up to `limit` jobs matching `filter`, newest first (a scan: for the few hundred jobs a
    /// page or a dead-letter list shows, not for bulk export).
    pub fn jobs_where(
        &self,
        limit: usize,
        filter: impl Fn(&Job) -> bool,
    ) -> Result<Vec<Job>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOBS)?;
        let mut out = Vec::new();
        for item in table.iter()?.rev() {
            let job: Job = decode(item?.1.value())?;
            if filter(&job) {
                out.push(job);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}
