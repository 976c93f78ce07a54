//! Work that blocks, run on a small pool of threads so the loop never waits for it.
//!
//! The slides' DNS point: `getaddrinfo` has no non-blocking form, so asyncio runs it in a
//! thread pool (`loop.getaddrinfo` → `run_in_executor`). `spawn_blocking` is that pool; the
//! thread that finishes a job wakes the waiting task from *another thread*, which reaches
//! the sleeping loop through the executor's `mio::Waker`.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread;

use crate::runtime::with_runtime;
use crate::task::{JoinError, panic_message};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed number of threads taking jobs from one queue.
pub(crate) struct BlockingPool {
    jobs: Sender<Job>,
}

impl BlockingPool {
    /// Starts `threads` threads. They end when the pool (its sender) is dropped.
    pub(crate) fn new(threads: usize) -> io::Result<BlockingPool> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            thread::Builder::new()
                .name(format!("blocking-{n}"))
                .spawn(move || work(&queue))?;
        }
        Ok(BlockingPool { jobs })
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    loop {
        // Hold the lock only to take one job, not while running it.
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return, // the runtime is gone
        }
    }
}

/// What a blocking job leaves for the task awaiting it.
struct Outcome<T> {
    result: Option<Result<T, JoinError>>,
    waker: Option<Waker>,
}

/// The future `spawn_blocking` returns.
pub struct BlockingHandle<T> {
    outcome: Arc<Mutex<Outcome<T>>>,
}

/// Runs `job` on the blocking pool; awaiting the handle gives its result, or
/// `JoinError::Panicked` if it panicked.
pub fn spawn_blocking<T, F>(job: F) -> BlockingHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let outcome = Arc::new(Mutex::new(Outcome {
        result: None,
        waker: None,
    }));
    let shared = Arc::clone(&outcome);
    let job: Job = Box::new(move || {
        let span = fdio::timeline::begin();
        let result = catch_unwind(AssertUnwindSafe(job))
            .map_err(|p| JoinError::Panicked(panic_message(p.as_ref())));
        span.work("blocking job", fdio::timeline::Args::new);
        let mut outcome = shared.lock().unwrap_or_else(PoisonError::into_inner);
        outcome.result = Some(result);
        if let Some(waker) = outcome.waker.take() {
            waker.wake(); // from this pool thread: the loop may have to be woken up
        }
    });
    let sent = with_runtime(|runtime| runtime.blocking.jobs.send(job));
    if sent.is_err() {
        let failed = Err(JoinError::Panicked(
            "the blocking pool has stopped".to_string(),
        ));
        outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .result = Some(failed);
    }
    BlockingHandle { outcome }
}

impl<T> Future for BlockingHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut outcome = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                outcome.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Resolves `host` with the system resolver (`getaddrinfo`) on the blocking pool.
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let host = host.to_string();
    let lookup = spawn_blocking(move || {
        (host.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect)
    });
    lookup.await.map_err(io::Error::other)?
}
