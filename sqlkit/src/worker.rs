//! The one thread that owns a connection. Work is sent to it as closures; the answer comes back
//! to async code on a oneshot ([`Worker::call`]) and to blocking code on a channel
//! ([`Worker::call_blocking`], [`Worker::submit`]), so no caller ever holds the connection.

use std::sync::mpsc;
use std::thread;

use rusqlite::Connection;

use crate::{Error, Result};

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// How much work may wait for the thread.
#[derive(Clone, Copy, Debug)]
pub enum Queue {
    /// Senders never wait (the hub's databases: async handlers must not block on a full queue).
    Unbounded,
    /// Senders wait once this many jobs are queued (the appliance's store: ingest cannot run
    /// ahead of the disk).
    Bounded(usize),
}

enum Sender {
    Unbounded(mpsc::Sender<Job>),
    Bounded(mpsc::SyncSender<Job>),
}

impl Sender {
    fn send(&self, job: Job) -> bool {
        match self {
            Sender::Unbounded(tx) => tx.send(job).is_ok(),
            Sender::Bounded(tx) => tx.send(job).is_ok(),
        }
    }
}

/// One thread that owns one connection. Dropping the worker lets the queued work finish and
/// waits for the thread, so the file is closed when the drop returns.
pub struct Worker {
    tx: Option<Sender>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread `name`, owning `conn`.
    pub fn start(name: &str, mut conn: Connection, queue: Queue) -> Result<Worker> {
        let (tx, rx) = match queue {
            Queue::Unbounded => {
                let (tx, rx) = mpsc::channel::<Job>();
                (Sender::Unbounded(tx), rx)
            }
            Queue::Bounded(n) => {
                let (tx, rx) = mpsc::sync_channel::<Job>(n);
                (Sender::Bounded(tx), rx)
            }
        };
        let thread = thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for job in rx {
                    // A job that panics fails alone: its open transaction rolls back as the
                    // panic unwinds, its caller hears `Gone`, and the thread takes the next job.
                    let run = std::panic::AssertUnwindSafe(|| job(&mut conn));
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!("a database job panicked; its work was rolled back");
                    }
                }
            })
            .map_err(|e| Error::Gone(format!("cannot start thread {name}: {e}")))?;
        Ok(Worker {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn queue(&self, job: Job) -> Result<()> {
        match &self.tx {
            Some(tx) if tx.send(job) => Ok(()),
            _ => Err(Error::Gone("it has ended".into())),
        }
    }

    /// Runs `f` on the thread and awaits its answer without blocking the async runtime (on an
    /// `Unbounded` worker; a `Bounded` one may make the caller wait for room in its queue).
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue(Box::new(move |c| {
            let _ = reply.send(f(c));
        }))?;
        answer
            .await
            .map_err(|_| Error::Gone("it ended while working".into()))
    }

    /// Runs `f` on the thread and waits for its answer (command line, timer threads).
    pub fn call_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> Result<T> {
        self.submit(f)
            .recv()
            .map_err(|_| Error::Gone("it ended while working".into()))
    }

    /// Queues `f`; its answer arrives on the returned channel (closed if the thread is gone), so
    /// a caller can queue the next piece of work before this one is done.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> mpsc::Receiver<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        let _ = self.queue(Box::new(move |c| {
            let _ = reply.send(f(c));
        }));
        answer
    }

    /// Queues `f` and does not wait (bookkeeping nobody waits on; `f` logs its own failure).
    pub fn send(&self, f: impl FnOnce(&mut Connection) + Send + 'static) {
        if self.queue(Box::new(f)).is_err() {
            tracing::error!("the database thread has stopped");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            // A job that held the last handle to its own worker must not wait for itself.
            if t.thread().id() != thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_on_the_named_thread_in_order_from_blocking_and_async_callers() {
        let w = Worker::start(
            "db-test",
            Connection::open_in_memory().unwrap(),
            Queue::Bounded(2),
        )
        .unwrap();
        w.call_blocking(|c| c.execute_batch("CREATE TABLE t (x INTEGER)"))
            .unwrap()
            .unwrap();
        for i in 0..10 {
            w.send(move |c| {
                c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
            });
        }
        let name = w
            .call_blocking(|_| thread::current().name().map(str::to_owned))
            .unwrap();
        assert_eq!(name.as_deref(), Some("db-test"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sum: i64 = rt
            .block_on(w.call(|c| c.query_row("SELECT sum(x) FROM t", [], |r| r.get(0))))
            .unwrap()
            .unwrap();
        assert_eq!(sum, 45);
    }

    #[test]
    fn a_panicking_job_fails_alone_and_its_transaction_rolls_back() {
        let w = Worker::start(
            "db-panic",
            Connection::open_in_memory().unwrap(),
            Queue::Unbounded,
        )
        .unwrap();
        w.call_blocking(|c| c.execute_batch("CREATE TABLE t (x INTEGER)"))
            .unwrap()
            .unwrap();
        let r: Result<()> = w.call_blocking(|c| {
            let tx = c.transaction().unwrap();
            tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
            panic!("boom")
        });
        assert!(matches!(r, Err(Error::Gone(_))));
        let n: i64 = w
            .call_blocking(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
            .unwrap()
            .unwrap();
        assert_eq!(
            n, 0,
            "the panicked job's insert was rolled back; the thread goes on"
        );
    }
}
