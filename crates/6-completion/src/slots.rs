//! The slots of the requests in flight: what the loop knows of each, found by its token.
//!
//! A slot holds a request's results until its owner takes them, and where the request is in
//! its life — one [`Lifecycle`] state:
//!
//! ```text
//!                  the owner polls, no result yet
//!   Submitted ─────────────────────────────────────▶ Waiting(waker)
//!       │    ◀───────────────────────────────────────── │
//!       │          a result comes (the owner is woken)  │
//!       │                                               │
//!       │ the last result comes                         │ the last result comes
//!       ▼        (no IORING_CQE_F_MORE)                 ▼ (woken)
//!   Finished ── the owner has taken every result ──▶ slot freed
//!
//!   Submitted, Waiting ── the owner is dropped ──▶ Abandoned(what the kernel may use)
//!                          (cancel asked)              │ the last result comes
//!                                                      ▼
//!                                                  slot freed, and with it what it kept
//!   Finished ── the owner is dropped ──▶ slot freed
//! ```
//!
//! Slots live in a slab: a token is an index, plus a generation, so that the token of a
//! finished request never names the request that reuses its slot.

use std::any::Any;
use std::collections::VecDeque;
use std::io;
use std::task::Waker;

use io_uring::cqueue;

/// One completion: the request's result (≥ 0, or a negated errno) and its flags.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    pub result: i32,
    pub flags: u32,
}

impl Completion {
    /// The result as `io::Result`: a negative value is `-errno`.
    pub fn io_result(self) -> io::Result<u32> {
        match self.result {
            n if n >= 0 => Ok(n as u32),
            n => Err(io::Error::from_raw_os_error(-n)),
        }
    }

    /// The provided buffer the kernel picked for this result, if any.
    pub fn buffer_id(self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    /// Whether the request goes on after this result (`IORING_CQE_F_MORE`): only a
    /// multishot request's results may say so, and its last one does not.
    pub fn more_to_come(self) -> bool {
        cqueue::more(self.flags)
    }
}

/// A request's token: its slot's index and the slot's generation, so a token of a request
/// that is long finished never names the request that reuses its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    index: u32,
    generation: u32,
}

impl Token {
    /// The 64-bit `user_data` the kernel hands back with each completion.
    pub fn user_data(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The token a completion's `user_data` names.
    pub fn from_user_data(user_data: u64) -> Token {
        Token {
            index: user_data as u32,
            generation: (user_data >> 32) as u32,
        }
    }
}

/// Where a request is in its life (see the diagram at the top of this file).
pub enum Lifecycle {
    /// The kernel has it; its owner is not waiting for a result (none asked yet, or it is
    /// busy with the last one).
    Submitted,
    /// The kernel has it, and its owner's task waits for the next result: wake it then.
    Waiting(Waker),
    /// The kernel is done with it: its last completion came. Results may still wait to be
    /// taken; the slot is freed once they have been.
    Finished,
    /// Its owner was dropped before the kernel was done: a cancel has been asked for, and
    /// what the kernel may still write into or read from (a buffer, a timespec) is kept here
    /// until the last completion. Its results are dropped as they come.
    Abandoned(Box<dyn Any>),
}

/// What a request's successful results are: all the loop must know to clean up a result
/// that nobody will take. A property of the request itself — the loop sets [`Yields::NewFd`]
/// only for the accept it builds ([`Driver::submit_accept`]) — never of its `--trace` label.
///
/// [`Driver::submit_accept`]: crate::ring::Driver::submit_accept
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Yields {
    /// A count or a status: nothing to clean up. (A provided buffer the kernel picked for a
    /// result is named by the completion's own flags, whatever the request.)
    Value,
    /// A new fd, which whoever takes the result owns: one that nobody takes is closed.
    NewFd,
}

/// What the loop knows of one request.
pub struct Slot {
    generation: u32,
    /// What it is, for `--trace` only: `recv`, `send`, `accept`…
    pub kind: &'static str,
    pub yields: Yields,
    /// It receives into the buffer ring (the driver counts those in flight).
    pub from_ring: bool,
    pub lifecycle: Lifecycle,
    /// Results not yet taken by the owner.
    pub results: VecDeque<Completion>,
    /// A multishot request is paused (cancelled) when this many results wait untaken; its
    /// owner submits it again after taking them. `usize::MAX`: never.
    pub pause_at: usize,
}

/// The slab of slots.
#[derive(Default)]
pub struct Slots {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    generation: u32,
    /// The result queues of freed slots, emptied, for the next slots: a request with one
    /// result (a send) would otherwise allocate a queue and free it again every time.
    spare_queues: Vec<VecDeque<Completion>>,
}

impl Slots {
    /// A new slot for a request labelled `kind` whose results are `yields` (`from_ring`: it
    /// receives into the buffer ring); its token.
    pub fn insert(
        &mut self,
        kind: &'static str,
        yields: Yields,
        from_ring: bool,
        pause_at: usize,
    ) -> Token {
        self.generation = self.generation.wrapping_add(1);
        let slot = Slot {
            generation: self.generation,
            kind,
            yields,
            from_ring,
            lifecycle: Lifecycle::Submitted,
            results: self.spare_queues.pop().unwrap_or_default(),
            pause_at,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        Token {
            index,
            generation: self.generation,
        }
    }

    pub fn get(&self, token: Token) -> Option<&Slot> {
        let slot = self.slots.get(token.index as usize)?.as_ref()?;
        (slot.generation == token.generation).then_some(slot)
    }

    pub fn get_mut(&mut self, token: Token) -> Option<&mut Slot> {
        let slot = self.slots.get_mut(token.index as usize)?.as_mut()?;
        (slot.generation == token.generation).then_some(slot)
    }

    /// Frees `token`'s slot; returns it (whatever it kept is dropped with it) — all but its
    /// queue of results, which must be empty by now, and is kept for the next slot.
    pub fn remove(&mut self, token: Token) -> Option<Slot> {
        self.get(token)?;
        self.free.push(token.index);
        let mut slot = self.slots[token.index as usize].take()?;
        let queue = std::mem::take(&mut slot.results);
        debug_assert!(queue.is_empty(), "a freed slot had results nobody took");
        self.keep_queue(queue);
        Some(slot)
    }

    /// Keeps an emptied queue of results for the next slot (one that never held a result
    /// has nothing worth keeping).
    pub fn keep_queue(&mut self, queue: VecDeque<Completion>) {
        if queue.capacity() > 0 {
            self.spare_queues.push(queue);
        }
    }

    /// How many emptied result queues wait for the next slots (for tests).
    #[cfg(test)]
    pub fn spare_queues(&self) -> usize {
        self.spare_queues.len()
    }

    /// How many requests the kernel may still complete.
    pub fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|slot| !matches!(slot.lifecycle, Lifecycle::Finished))
            .count()
    }
}
