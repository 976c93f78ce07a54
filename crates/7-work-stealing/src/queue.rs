//! A worker's local run queue: a bounded ring that one thread pushes and pops without a lock,
//! and from which the other workers steal half at a time.
//!
//! This is the data structure the lesson is about, so it is written by hand (crossbeam's
//! `deque` would do the job; tokio writes its own, and this one follows its design):
//!
//! ```text
//!          steal   real                tail
//!            │      │                   │
//!   ─────────▼──────▼───────────────────▼─────────
//!    … free │ being │  tasks the owner  │ free …      (a ring of CAPACITY slots)
//!           │stolen │  pops from here   │
//! ```
//!
//! - `tail` is written by the owner only: a push writes the slot, then publishes it by
//!   moving `tail` (a `Release` store: whoever reads the new tail sees the slot written).
//! - `head` packs two indexes in one `AtomicU64`, so one compare-and-swap moves both:
//!   `real` is the next task to take; `steal` lags behind it while a thief copies the tasks
//!   it has claimed. The owner pops by moving `real` with a CAS (a thief may move it too);
//!   a thief claims half the tasks by moving `real` forward, copies them out, then brings
//!   `steal` up to `real`. Until then the owner does not reuse those slots: it counts its room
//!   from `steal`, and a second thief gives up (one theft at a time).
//! - A full queue moves half its tasks to the injector (the global queue) in one batch, so
//!   the next 128 pushes cost no lock at all.
//!
//! Indexes are `u32`s that only grow (wrapping): `tail - real` is the length even after a
//! wrap, and a slot is `index % CAPACITY`.

use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::Arc;

use crate::sync::{AtomicU32, AtomicU64, Ordering, UnsafeCell};

/// How many tasks a local queue holds (tokio: 256). Small under loom, so that a model
/// check reaches "full" and "wrapped around" in a few steps.
pub(crate) const CAPACITY: usize = if cfg!(all(loom, test)) { 4 } else { 256 };
const MASK: u32 = CAPACITY as u32 - 1;
const HALF: u32 = CAPACITY as u32 / 2;

fn pack(steal: u32, real: u32) -> u64 {
    (u64::from(steal) << 32) | u64::from(real)
}

fn unpack(head: u64) -> (u32, u32) {
    ((head >> 32) as u32, head as u32)
}

/// The ring, shared by its owner and the thieves.
pub(crate) struct Queue<T> {
    head: AtomicU64,
    tail: AtomicU32,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// Safety: the slots hold `T`s that move between threads (so `T: Send`), and every access to
// a slot is ordered by the index protocol above: a slot is written only by the owner, in the
// free part of the ring, and read only by whoever claimed it with a CAS on `head`.
unsafe impl<T: Send> Send for Queue<T> {}
// Safety: as for `Send` just above: the index protocol orders every access to a slot.
unsafe impl<T: Send> Sync for Queue<T> {}

/// The owner's end: push and pop. Exactly one exists per queue; it is `Send` (it moves into
/// its worker thread) but not `Sync` nor `Clone`, so only one thread ever pushes.
pub(crate) struct Owner<T> {
    queue: Arc<Queue<T>>,
    not_sync: PhantomData<Cell<()>>,
}

/// Creates a queue: the owner's end, and the shared one the thieves use.
pub(crate) fn new<T>() -> (Owner<T>, Arc<Queue<T>>) {
    starting_at(0)
}

/// A queue whose indexes start at `index` (the tests start them just before they wrap).
fn starting_at<T>(index: u32) -> (Owner<T>, Arc<Queue<T>>) {
    let slots = (0..CAPACITY)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let queue = Arc::new(Queue {
        head: AtomicU64::new(pack(index, index)),
        tail: AtomicU32::new(index),
        slots,
    });
    let owner = Owner {
        queue: Arc::clone(&queue),
        not_sync: PhantomData,
    };
    (owner, queue)
}

impl<T> Queue<T> {
    /// Moves the value out of slot `index`.
    ///
    /// Safety: the caller has claimed `index` (moved `head` past it) and it holds a value.
    unsafe fn take(&self, index: u32) -> T {
        // Safety: claimed, so nobody else reads or writes this slot until it is free again.
        self.slots[(index & MASK) as usize].with(|slot| unsafe { (*slot).assume_init_read() })
    }

    /// Writes `value` into slot `index`.
    ///
    /// Safety: only the owner writes, and only to a slot in the free part of the ring.
    unsafe fn put(&self, index: u32, value: T) {
        // Safety: a free slot: no thief reads it until `tail` publishes it.
        self.slots[(index & MASK) as usize].with_mut(|slot| unsafe { (*slot).write(value) });
    }

    /// How many tasks are queued (a snapshot: it may change at once).
    pub(crate) fn len(&self) -> usize {
        let (_, real) = unpack(self.head.load(Ordering::Acquire));
        self.tail.load(Ordering::Acquire).wrapping_sub(real) as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Steals half of this queue's tasks (rounded up) into `thief`'s queue, which must be
    /// nearly empty, and returns one of them to run now, with how many were taken. `None` if
    /// there was nothing to take, another thief is at work, or `thief` has no room.
    pub(crate) fn steal_into(&self, thief: &Owner<T>) -> Option<(T, usize)> {
        let dest = &thief.queue;
        // Only the thief pushes to its own queue, so its tail cannot move under us.
        let dest_tail = dest.tail.load(Ordering::Relaxed);
        let (dest_steal, _) = unpack(dest.head.load(Ordering::Acquire));
        if dest_tail.wrapping_sub(dest_steal) > HALF {
            return None;
        }
        // 1. Claim: move `real` forward by half, leave `steal` where it was.
        let mut head = self.head.load(Ordering::Acquire);
        let (first, count) = loop {
            let (steal, real) = unpack(head);
            if steal != real {
                return None; // another thief is copying: try elsewhere
            }
            let available = self.tail.load(Ordering::Acquire).wrapping_sub(real);
            let count = available - available / 2;
            if count == 0 {
                return None;
            }
            let claimed = pack(steal, real.wrapping_add(count));
            match self
                .head
                .compare_exchange(head, claimed, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break (real, count),
                Err(now) => head = now,
            }
        };
        // 2. Copy the claimed tasks into the thief's free slots.
        for i in 0..count {
            // Safety: claimed above: the owner does not reuse these slots while `steal` lags.
            let task = unsafe { self.take(first.wrapping_add(i)) };
            // Safety: the thief owns `dest`, and checked it has room for HALF ≥ count.
            unsafe { dest.put(dest_tail.wrapping_add(i), task) };
        }
        // 3. Release: bring `steal` up to `real` (the owner may have popped meanwhile).
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let (_, real) = unpack(head);
            match self.head.compare_exchange(
                head,
                pack(real, real),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        // 4. Keep the last one to run, publish the others in the thief's queue.
        let last = dest_tail.wrapping_add(count - 1);
        // Safety: written just above, not yet published: only we can see it.
        let task = unsafe { dest.take(last) };
        if count > 1 {
            dest.tail.store(last, Ordering::Release);
        }
        Some((task, count as usize))
    }
}

impl<T> Owner<T> {
    /// Pushes `task` at the back. A full queue first gives half its tasks, and `task`, to
    /// `overflow` (the injector), as one batch.
    pub(crate) fn push(&self, task: T, overflow: impl FnOnce(Vec<T>)) {
        let queue = &*self.queue;
        let tail = queue.tail.load(Ordering::Relaxed);
        let mut task = task;
        loop {
            let (steal, real) = unpack(queue.head.load(Ordering::Acquire));
            if tail.wrapping_sub(steal) < CAPACITY as u32 {
                break; // room
            }
            if steal != real {
                // A thief is making room right now: this one task goes to the injector.
                overflow(vec![task]);
                return;
            }
            match self.push_overflow(task, real, tail) {
                Ok(batch) => {
                    overflow(batch);
                    return;
                }
                Err(back) => task = back, // a thief or a pop moved `head`: look again
            }
        }
        // Safety: `tail` is in the free part of the ring (checked above against `steal`).
        unsafe { queue.put(tail, task) };
        queue.tail.store(tail.wrapping_add(1), Ordering::Release);
    }

    /// Claims the oldest HALF tasks of a full queue and returns them with `task`; gives
    /// `task` back if `head` moved meanwhile.
    fn push_overflow(&self, task: T, real: u32, tail: u32) -> Result<Vec<T>, T> {
        let queue = &*self.queue;
        debug_assert_eq!(tail.wrapping_sub(real), CAPACITY as u32);
        let moved = real.wrapping_add(HALF);
        if queue
            .head
            .compare_exchange(
                pack(real, real),
                pack(moved, moved),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return Err(task);
        }
        let mut batch = Vec::with_capacity(HALF as usize + 1);
        for i in 0..HALF {
            // Safety: claimed by the CAS above.
            batch.push(unsafe { queue.take(real.wrapping_add(i)) });
        }
        batch.push(task);
        Ok(batch)
    }

    /// Pops the task at the front (the oldest: a FIFO, so a task that yields goes behind
    /// the others).
    pub(crate) fn pop(&self) -> Option<T> {
        let queue = &*self.queue;
        let mut head = queue.head.load(Ordering::Acquire);
        let real = loop {
            let (steal, real) = unpack(head);
            if real == queue.tail.load(Ordering::Relaxed) {
                return None;
            }
            let next_real = real.wrapping_add(1);
            // No theft in progress: both indexes move together.
            let next_steal = if steal == real { next_real } else { steal };
            match queue.head.compare_exchange(
                head,
                pack(next_steal, next_real),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break real,
                Err(now) => head = now,
            }
        };
        // Safety: claimed by the CAS above.
        Some(unsafe { queue.take(real) })
    }
}

impl<T> Drop for Owner<T> {
    /// The tasks still queued are dropped with the owner (at the runtime's shutdown).
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Pushes and pops go in FIFO order, and a full queue moves half of itself, plus the new
    /// task, to the overflow in one batch.
    #[test]
    fn fifo_and_overflow_half() {
        let (owner, _queue) = new::<usize>();
        let mut overflowed = Vec::new();
        for i in 0..CAPACITY + 1 {
            owner.push(i, |batch| overflowed.extend(batch));
        }
        let expected: Vec<usize> = (0..HALF as usize).chain([CAPACITY]).collect();
        assert_eq!(overflowed, expected);
        let rest: Vec<usize> = std::iter::from_fn(|| owner.pop()).collect();
        assert_eq!(rest, (HALF as usize..CAPACITY).collect::<Vec<_>>());
    }

    /// A thief takes half (rounded up), keeps one to run, and queues the rest for itself.
    #[test]
    fn steal_takes_half() {
        let (victim, queue) = new::<usize>();
        let (thief, _) = new::<usize>();
        for i in 0..5 {
            victim.push(i, |_| unreachable!());
        }
        let (task, count) = queue.steal_into(&thief).expect("something to steal");
        assert_eq!((task, count), (2, 3));
        assert_eq!(thief.pop(), Some(0));
        assert_eq!(thief.pop(), Some(1));
        assert_eq!(thief.pop(), None);
        assert_eq!(victim.pop(), Some(3));
        assert_eq!(victim.pop(), Some(4));
    }

    /// Indexes that wrap past `u32::MAX` in the middle of pushes, an overflow, a steal and
    /// pops: the queue still holds exactly what was pushed, in order.
    #[test]
    fn indexes_wrap_around() {
        let (owner, queue) = starting_at::<usize>(u32::MAX - 10);
        let (thief, _) = new::<usize>();
        let mut overflowed = Vec::new();
        for i in 0..CAPACITY + 1 {
            owner.push(i, |batch| overflowed.extend(batch));
        }
        assert_eq!(queue.len(), HALF as usize);
        let (task, count) = queue.steal_into(&thief).expect("something to steal");
        let mut stolen: Vec<usize> = std::iter::from_fn(|| thief.pop()).collect();
        stolen.push(task);
        assert_eq!(count, stolen.len());
        let mut out: Vec<usize> = overflowed;
        out.extend(stolen);
        out.extend(std::iter::from_fn(|| owner.pop()));
        out.sort_unstable();
        assert_eq!(out, (0..CAPACITY + 1).collect::<Vec<_>>());
    }

    /// Many threads steal while the owner pushes and pops: every task comes out once.
    /// (Miri, which runs this a thousand times slower and checks every access, gets 2,000.)
    #[test]
    fn concurrent_steals_lose_and_duplicate_nothing() {
        const TASKS: usize = if cfg!(miri) { 2_000 } else { 200_000 };
        let (owner, queue) = new::<usize>();
        let overflow = std::sync::Mutex::new(Vec::new());
        let seen: Vec<_> = (0..TASKS)
            .map(|_| std::sync::atomic::AtomicU32::new(0))
            .collect();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    let (thief, _) = new::<usize>();
                    while !done.load(std::sync::atomic::Ordering::Acquire) || !queue.is_empty() {
                        if let Some((task, _)) = queue.steal_into(&thief) {
                            seen[task].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            while let Some(task) = thief.pop() {
                                seen[task].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
            for i in 0..TASKS {
                owner.push(i, |batch| overflow.lock().unwrap().extend(batch));
                if i % 3 == 0
                    && let Some(task) = owner.pop()
                {
                    seen[task].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            while let Some(task) = owner.pop() {
                seen[task].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        for task in overflow.into_inner().unwrap() {
            seen[task].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        for (task, count) in seen.iter().enumerate() {
            assert_eq!(
                count.load(std::sync::atomic::Ordering::Relaxed),
                1,
                "task {task}"
            );
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Mutex;
    use loom::sync::atomic::AtomicUsize;

    /// How many times each task came out; at the end every one must have come out once.
    type Seen = Arc<Vec<AtomicUsize>>;

    fn seen(tasks: usize) -> Seen {
        Arc::new((0..tasks).map(|_| AtomicUsize::new(0)).collect())
    }

    fn record(seen: &[AtomicUsize], task: usize) {
        seen[task].fetch_add(1, Ordering::Relaxed);
    }

    /// Pops what is left in `owner`'s queue, recording each task.
    fn pop_all(owner: &Owner<usize>, seen: &[AtomicUsize]) {
        while let Some(task) = owner.pop() {
            record(seen, task);
        }
    }

    /// A thief's thread: steals from `queue` into a queue of its own, records what it got.
    fn spawn_thief(queue: &Arc<Queue<usize>>, seen: &Seen) -> loom::thread::JoinHandle<()> {
        let (queue, seen) = (Arc::clone(queue), Arc::clone(seen));
        loom::thread::spawn(move || {
            let (thief, _) = new::<usize>();
            if let Some((task, _)) = queue.steal_into(&thief) {
                record(&seen, task);
                pop_all(&thief, &seen);
            }
        })
    }

    fn assert_each_once(seen: &[AtomicUsize]) {
        for count in seen {
            assert_eq!(count.load(Ordering::Relaxed), 1);
        }
    }

    /// The owner pushes past the capacity (so it overflows) and pops, while a thief steals
    /// half: in every interleaving each task comes out exactly once.
    #[test]
    fn loom_push_pop_steal_every_task_once() {
        loom::model(|| {
            const TASKS: usize = CAPACITY + 2;
            let (owner, queue) = new::<usize>();
            let seen = seen(TASKS);
            let overflow = Arc::new(Mutex::new(Vec::new()));
            let thief = spawn_thief(&queue, &seen);
            for task in 0..TASKS {
                owner.push(task, |batch| overflow.lock().unwrap().extend(batch));
            }
            if let Some(task) = owner.pop() {
                record(&seen, task);
            }
            thief.join().unwrap();
            pop_all(&owner, &seen);
            for task in overflow.lock().unwrap().drain(..) {
                record(&seen, task);
            }
            assert_each_once(&seen);
        });
    }

    /// Indexes that wrap past `u32::MAX` while the owner pushes and pops and a thief
    /// steals: every task comes out once.
    #[test]
    fn loom_indexes_wrap_around_under_a_theft() {
        loom::model(|| {
            const TASKS: usize = 3;
            let (owner, queue) = starting_at::<usize>(u32::MAX - 1);
            let seen = seen(TASKS);
            let thief = spawn_thief(&queue, &seen);
            for task in 0..TASKS {
                owner.push(task, |_| unreachable!("the queue holds 4"));
            }
            if let Some(task) = owner.pop() {
                record(&seen, task);
            }
            thief.join().unwrap();
            pop_all(&owner, &seen);
            assert_each_once(&seen);
        });
    }

    /// A thief is robbed while it copies: it steals from the owner's queue into its own,
    /// which holds tasks already, while a second thief steals from it. The first thief
    /// counts its room from the second's claim, not past it, so it never writes a slot the
    /// second is still copying out; the tasks it copies are not published yet, so the second
    /// takes only what was there before. Every task comes out once, and loom checks that no
    /// slot is read and written at once.
    #[test]
    fn loom_a_thief_robbed_while_it_copies() {
        loom::model(|| {
            const TASKS: usize = 6;
            let (owner, queue) = new::<usize>();
            let (thief, thief_queue) = new::<usize>();
            let seen = seen(TASKS);
            for task in 0..3 {
                owner.push(task, |_| unreachable!("the queue holds 4"));
                thief.push(3 + task, |_| unreachable!("the queue holds 4"));
            }
            let first_thief = {
                let (queue, seen) = (Arc::clone(&queue), Arc::clone(&seen));
                loom::thread::spawn(move || {
                    if let Some((task, _)) = queue.steal_into(&thief) {
                        record(&seen, task);
                    }
                    pop_all(&thief, &seen);
                })
            };
            let second_thief = spawn_thief(&thief_queue, &seen);
            first_thief.join().unwrap();
            second_thief.join().unwrap();
            pop_all(&owner, &seen);
            assert_each_once(&seen);
        });
    }

    /// Two thieves race the owner's pops: one theft at a time, nothing lost or doubled.
    #[test]
    fn loom_two_thieves_and_the_owner() {
        loom::model(|| {
            const TASKS: usize = 3;
            let (owner, queue) = new::<usize>();
            let seen = seen(TASKS);
            for task in 0..TASKS {
                owner.push(task, |_| unreachable!("the queue holds 4"));
            }
            let thieves: Vec<_> = (0..2).map(|_| spawn_thief(&queue, &seen)).collect();
            if let Some(task) = owner.pop() {
                record(&seen, task);
            }
            for thief in thieves {
                thief.join().unwrap();
            }
            pop_all(&owner, &seen);
            assert_each_once(&seen);
        });
    }
}
