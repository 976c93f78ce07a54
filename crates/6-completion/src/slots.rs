//! The slots of the requests in flight: what the loop knows of each, found by its token.
//!
//! A slot holds a request's results until its task takes them, the task's waker, and —
//! once the future that owned the request is gone — whatever the kernel may still write
//! into. Slots live in a slab: a token is an index, plus a generation so that the token of
//! a finished request never names the request that reuses its slot.

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

/// What the loop knows of one request in flight.
pub struct Slot {
    generation: u32,
    /// What it is, for `--trace`: `recv`, `send`, `accept`…
    pub kind: &'static str,
    /// Results not yet taken by the task.
    pub completions: VecDeque<Completion>,
    /// The last completion has arrived: the kernel is done with this request.
    pub finished: bool,
    pub waker: Option<Waker>,
    /// More results than this waiting to be taken: the request is cancelled (a multishot
    /// receive that keeps filling buffers while its task is busy sending).
    pub max_queued: usize,
    /// A cancel has been asked for already.
    pub cancelling: bool,
    /// Set when the future that owned the request was dropped before it finished: what the
    /// kernel may still write into (a buffer, a timespec) is kept here until it is done.
    pub abandoned: Option<Box<dyn Any>>,
}

/// The slab of slots.
#[derive(Default)]
pub struct Slots {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    generation: u32,
}

impl Slots {
    /// A new slot for a request of `kind`; its token.
    pub fn insert(&mut self, kind: &'static str, max_queued: usize) -> Token {
        self.generation = self.generation.wrapping_add(1);
        let slot = Slot {
            generation: self.generation,
            kind,
            completions: VecDeque::new(),
            finished: false,
            waker: None,
            max_queued,
            cancelling: false,
            abandoned: None,
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

    /// Frees `token`'s slot (and drops what it kept alive).
    pub fn remove(&mut self, token: Token) {
        if self.get(token).is_some() {
            self.slots[token.index as usize] = None;
            self.free.push(token.index);
        }
    }

    /// How many requests the kernel may still complete.
    pub fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|slot| !slot.finished)
            .count()
    }
}

/// `[recv×3, send×1]`: what a turn submitted or completed, counted by kind.
pub struct Tally<'a>(pub &'a [&'static str]);

impl std::fmt::Display for Tally<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for kind in self.0 {
            match counts.iter_mut().find(|(k, _)| k == kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((kind, 1)),
            }
        }
        f.write_str("[")?;
        for (i, (kind, n)) in counts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{kind}×{n}")?;
        }
        f.write_str("]")
    }
}
