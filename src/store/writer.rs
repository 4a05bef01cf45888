//! Group commit: the writes that wait for this process's write connection are committed together.
//!
//! [`Store::write`] hands a [`WriteJob`] to the store's writer, a task of its own that owns the write connection
//! between transactions. The writer takes every job waiting in its queue (up to [`MAX_BATCH`]), runs them one after
//! another in one `BEGIN IMMEDIATE` … `COMMIT`, and answers each caller once the commit has ended. Each job's rows
//! — a poll's snapshot, its rule state, its alert rows and outbox notices — still commit together; the batch only
//! puts several polls in one commit. A poll cycle of 10,000 series paid a `BEGIN` and a `COMMIT` per poll, each a
//! round trip to sqlx's connection thread (BENCHMARKS.md, figure 2).
//!
//! Failure stays per job. When a job's statement fails, or the commit does, the whole transaction is rolled back
//! (the connection is closed: see [`WriteTx`]) and every job of the batch runs again alone, in its own transaction,
//! so a job that cannot be written fails alone and the others are stored. A job therefore depends on its inputs
//! only. A `BEGIN` that fails (another process held SQLite's lock past the busy timeout, a read-only file) fails
//! every job of the batch with that error at once, rather than waiting the busy timeout once per job.
//!
//! The writer runs the jobs, not the callers: a caller that is cancelled while its write is queued or running
//! (SIGTERM's grace period ending, a test dropping a future) neither drops the shared connection mid-transaction
//! nor takes the other jobs' writes with it; its own write commits or not with its batch, whole either way.

use std::sync::Mutex;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError, WriteTx};

/// The most jobs committed in one transaction: a batch holds SQLite's write lock for about this many polls' writes
/// (~0.2 ms each), which other processes wait for.
pub const MAX_BATCH: usize = 64;

/// A write to run in a transaction the store's writer opens, possibly beside other jobs.
///
/// [`WriteJob::write`] may run more than once — a second time, alone, when another write of its batch failed — so
/// what it writes must follow from the job's own fields.
pub trait WriteJob: Send + 'static {
    type Output: Send + 'static;

    /// The job's statements, in `tx`; an error rolls back the transaction.
    fn write<'t>(&'t mut self, tx: &'t mut WriteTx) -> BoxFuture<'t, Result<Self::Output, StoreError>>;

    /// The series whose rule state the job reads first, if any: a batch reads all of them in one statement
    /// ([`WriteTx::prefetch_states`]).
    fn reads_state_of(&self) -> Option<i64> {
        None
    }
}

/// A job in the queue, its answer and where that goes.
trait Queued: Send {
    /// Runs the job; its output is kept until the transaction ends.
    fn run<'t>(&'t mut self, tx: &'t mut WriteTx) -> BoxFuture<'t, Result<(), StoreError>>;
    /// The transaction ended: committed (`Ok`), or not. Answers the caller.
    fn finish(self: Box<Self>, ended: Result<(), StoreError>);
    fn reads_state_of(&self) -> Option<i64>;
}

struct Entry<J: WriteJob> {
    job: J,
    output: Option<J::Output>,
    reply: oneshot::Sender<Result<J::Output, StoreError>>,
}

impl<J: WriteJob> Queued for Entry<J> {
    fn run<'t>(&'t mut self, tx: &'t mut WriteTx) -> BoxFuture<'t, Result<(), StoreError>> {
        Box::pin(async move {
            self.output = Some(self.job.write(tx).await?);
            Ok(())
        })
    }

    fn reads_state_of(&self) -> Option<i64> {
        self.job.reads_state_of()
    }

    fn finish(self: Box<Self>, ended: Result<(), StoreError>) {
        let answer = match (ended, self.output) {
            (Ok(()), Some(output)) => Ok(output),
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(StoreError::Shared { cause: "the write did not run".into() }),
        };
        // A caller that went away does not need its answer; its write is committed or not all the same.
        let _ = self.reply.send(answer);
    }
}

/// Where jobs are queued for the writer task; the task is started by the first write on the current runtime, and
/// again when the runtime it ran on has gone (tests run one runtime each).
#[derive(Default)]
pub(super) struct Writer {
    queue: Mutex<Option<mpsc::UnboundedSender<Box<dyn Queued>>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Store {
    /// Runs `job` in a write transaction of the store's writer, with whatever other jobs are queued (group
    /// commit), and returns its output once that transaction has committed.
    pub async fn write<J: WriteJob>(&self, job: J) -> Result<J::Output, StoreError> {
        let (reply, answer) = oneshot::channel();
        let mut pending: Option<Box<dyn Queued>> = Some(Box::new(Entry { job, output: None, reply }));
        {
            let mut queue = self.writer.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(tx) = queue.as_ref()
                && let Some(entry) = pending.take()
                && let Err(mpsc::error::SendError(back)) = tx.send(entry)
            {
                // The writer's runtime is gone (its task with it): start another below.
                pending = Some(back);
            }
            if let Some(entry) = pending {
                let (tx, rx) = mpsc::unbounded_channel();
                // The task holds no sender: once every clone of this store is gone, the queue closes and it ends.
                let store = Store { writer: std::sync::Arc::default(), ..self.clone() };
                tokio::spawn(store.run_writer(rx));
                if tx.send(entry).is_err() {
                    return Err(StoreError::Shared { cause: "the database writer could not start".into() });
                }
                *queue = Some(tx);
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Shared { cause: "the database writer stopped before this write ended".into() })
        })
    }

    async fn run_writer(self, mut rx: mpsc::UnboundedReceiver<Box<dyn Queued>>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.commit_batch(std::mem::take(&mut batch)).await;
        }
    }

    /// One transaction for the whole batch; on any failure, each job alone.
    async fn commit_batch(&self, mut batch: Vec<Box<dyn Queued>>) {
        let mut tx = match self.begin_write().await {
            Ok(tx) => tx,
            Err(e) => {
                let cause = e.to_string();
                let mut jobs = batch.into_iter();
                if let Some(first) = jobs.next() {
                    first.finish(Err(e));
                }
                for job in jobs {
                    job.finish(Err(StoreError::Shared { cause: cause.clone() }));
                }
                return;
            }
        };
        // The rule states the batch's polls read, in one statement rather than one each.
        let states: Vec<i64> = batch.iter().filter_map(|job| job.reads_state_of()).collect();
        let mut error = tx.prefetch_states(&states).await.err();
        if error.is_none() {
            for job in &mut batch {
                if let Err(e) = job.run(&mut tx).await {
                    error = Some(e);
                    break;
                }
            }
        }
        let error = match error {
            None => tx.commit().await.err(),
            // Dropping a transaction that is still open closes its connection, which rolls it back (and gives
            // back this process's turn to write).
            Some(e) => {
                drop(tx);
                Some(e)
            }
        };
        let Some(error) = error else {
            for job in batch {
                job.finish(Ok(()));
            }
            return;
        };
        if batch.len() == 1 {
            // Alone already: its own error is its answer.
            if let Some(job) = batch.pop() {
                job.finish(Err(error));
            }
            return;
        }
        tracing::debug!(jobs = batch.len(), %error, "a batched write failed; writing each of its jobs alone");
        for mut job in batch {
            let ended = async {
                let mut tx = self.begin_write().await?;
                job.run(&mut tx).await?;
                tx.commit().await
            }
            .await;
            job.finish(ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Waker};

    use tokio::sync::Semaphore;

    use super::*;
    use crate::model::{SeriesKey, TaskType};

    /// Registers the series `target`; before that, says it started and waits for its gate, if it has them; fails
    /// instead when `fail`. Counts its runs.
    struct Register {
        target: &'static str,
        started: Option<mpsc::UnboundedSender<()>>,
        gate: Option<Arc<Semaphore>>,
        fail: bool,
        runs: Arc<AtomicUsize>,
    }

    fn register(target: &'static str) -> Register {
        Register { target, started: None, gate: None, fail: false, runs: Arc::default() }
    }

    impl WriteJob for Register {
        type Output = i64;

        fn write<'t>(&'t mut self, tx: &'t mut WriteTx) -> BoxFuture<'t, Result<i64, StoreError>> {
            Box::pin(async move {
                self.runs.fetch_add(1, Ordering::SeqCst);
                if let Some(started) = &self.started {
                    let _ = started.send(());
                }
                if let Some(gate) = &self.gate {
                    gate.acquire().await.expect("gate open").forget();
                }
                if self.fail {
                    sqlx::query("INSERT INTO no_such_table VALUES (1)")
                        .execute(tx.inner())
                        .await
                        .map_err(tx.failed("writing the failing job"))?;
                }
                let key = SeriesKey {
                    target: self.target.into(),
                    account: "prod".into(),
                    region: "cn-north-4".into(),
                    project_id: "p1".into(),
                    enterprise_project_id: None,
                    task_type: TaskType::ClusterScan,
                };
                tx.ensure_series(&key).await
            })
        }
    }

    /// Polls `f` once, so that a write is handed to the writer before the test goes on.
    fn queue<F: Future>(f: &mut Pin<Box<F>>) {
        assert!(f.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
    }

    async fn targets(store: &Store) -> Vec<String> {
        store.series().await.unwrap().into_iter().map(|s| s.key.target).collect()
    }

    /// A job that runs until the test lets it finish, started and holding the writer.
    fn held(target: &'static str) -> (Register, mpsc::UnboundedReceiver<()>, Arc<Semaphore>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        (Register { started: Some(tx), gate: Some(Arc::clone(&gate)), ..register(target) }, rx, gate)
    }

    #[tokio::test]
    async fn writes_that_wait_for_the_writer_commit_together_and_only_then_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let (a, mut a_started, a_gate) = held("a");
        let (d, mut d_started, d_gate) = held("d");
        let mut a = Box::pin(store.write(a));
        queue(&mut a);
        let _ = a_started.recv().await;
        // While `a` holds the writer, three more queue up.
        let (mut b, mut c, mut d) =
            (Box::pin(store.write(register("b"))), Box::pin(store.write(register("c"))), Box::pin(store.write(d)));
        queue(&mut b);
        queue(&mut c);
        queue(&mut d);
        a_gate.add_permits(1);
        a.await.unwrap();
        // `d` runs last in the batch of b, c, d: while it holds the transaction, b's and c's rows are written but
        // not committed, so a reader does not see them — they were not committed one by one.
        let _ = d_started.recv().await;
        assert_eq!(targets(&store).await, ["a"]);
        d_gate.add_permits(1);
        let (b, c, d) = (b.await.unwrap(), c.await.unwrap(), d.await.unwrap());
        assert!(b < c && c < d, "ids in queue order: {b} {c} {d}");
        assert_eq!(targets(&store).await, ["a", "b", "c", "d"]);
    }

    #[tokio::test]
    async fn a_write_that_fails_fails_alone_and_the_rest_of_its_batch_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let (a, mut a_started, a_gate) = held("a");
        let mut a = Box::pin(store.write(a));
        queue(&mut a);
        let _ = a_started.recv().await;
        let (b, c, d) = (register("b"), Register { fail: true, ..register("c") }, register("d"));
        let (b_runs, c_runs, d_runs) = (Arc::clone(&b.runs), Arc::clone(&c.runs), Arc::clone(&d.runs));
        let (mut b, mut c, mut d) = (Box::pin(store.write(b)), Box::pin(store.write(c)), Box::pin(store.write(d)));
        queue(&mut b);
        queue(&mut c);
        queue(&mut d);
        // A caller that goes away loses nothing: its write, and the others, go on.
        drop(d);
        a_gate.add_permits(1);
        a.await.unwrap();
        b.await.unwrap();
        let e = c.await.unwrap_err();
        assert!(e.to_string().contains("no such table: no_such_table"), "{e}");
        // The writer goes on after a failed batch; `e`, queued after `d`, answers after it.
        store.write(register("e")).await.unwrap();
        // The batch of b, c, d was rolled back at c, then each ran alone: b twice, c twice (failing), d once.
        assert_eq!(
            (b_runs.load(Ordering::SeqCst), c_runs.load(Ordering::SeqCst), d_runs.load(Ordering::SeqCst)),
            (2, 2, 1)
        );
        // Every row once: the batch's first attempt left nothing behind. `d` is stored though its caller left.
        assert_eq!(targets(&store).await, ["a", "b", "d", "e"]);
    }

    /// A batch whose `BEGIN` fails fails every job at once with that error, the first as SQLite's, the others as
    /// the same text; none of them waits for a `BEGIN` of its own.
    #[tokio::test]
    async fn a_batch_that_cannot_begin_fails_every_job_with_that_cause() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let (a, mut a_started, a_gate) = held("a");
        let mut a = Box::pin(store.write(a));
        queue(&mut a);
        let _ = a_started.recv().await;
        let (mut b, mut c, mut d) = (
            Box::pin(store.write(register("b"))),
            Box::pin(store.write(register("c"))),
            Box::pin(store.write(register("d"))),
        );
        queue(&mut b);
        queue(&mut c);
        queue(&mut d);
        // The store closes while `a` holds the writer (a shutdown): `a` still commits, the next `BEGIN` cannot start.
        let mut closing = Box::pin(store.close());
        queue(&mut closing);
        a_gate.add_permits(1);
        a.await.unwrap();
        let (b, c, d) = (b.await.unwrap_err(), c.await.unwrap_err(), d.await.unwrap_err());
        assert!(matches!(b, StoreError::Sql { doing: "beginning a write", .. }), "{b:?}");
        for other in [&c, &d] {
            assert!(matches!(other, StoreError::Shared { .. }), "{other:?}");
            assert_eq!(other.to_string(), b.to_string());
        }
        closing.await;
    }

    #[tokio::test]
    async fn a_store_whose_runtime_is_gone_starts_a_new_writer_on_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let first = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = std::thread::spawn(move || {
            first.block_on(async {
                let store = Store::open(&path).await.unwrap();
                store.write(register("a")).await.unwrap();
                store
            })
        })
        .join()
        .unwrap();
        // That runtime, and the writer task on it, are gone now.
        store.write(register("b")).await.unwrap();
        assert_eq!(targets(&store).await, ["a", "b"]);
    }
}
