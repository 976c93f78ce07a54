//! The words a selector and its callbacks share: the [`Token`] that names a registration,
//! the [`Interest`] a callback asks for, the [`Trigger`] mode, and what a callback is told
//! when it runs: [`Ready`], with its budget.

/// The name of one registration; it travels through the kernel as the epoll event's data.
/// Tokens are never reused, so a late event for a closed source can never reach a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub u64);

/// What a callback wants to hear about: Python's `EVENT_READ` and `EVENT_WRITE`, which the
/// selector turns into epoll's `EPOLLIN` and `EPOLLOUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    /// Readable: bytes, EOF or a connection to accept are waiting.
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    /// Nothing but hang-ups and errors, which epoll reports whether asked for or not.
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };
}

/// How epoll reports a ready fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// epoll's default, and `select`'s and `poll`'s way: a wait reports the fd for as long as
    /// it is ready. A callback may read once; if bytes are left, the next turn reports it again.
    Level,
    /// `EPOLLET`, mio's and tokio's choice: a wait reports the fd when it *becomes* ready,
    /// once. Bytes left behind are never mentioned again: read until `WouldBlock`.
    Edge,
}

/// How many reads (or accepts) an edge-triggered callback may make per turn. Then it must
/// let the others run, and the selector runs it again on the next turn (see
/// [`Selector::budget_spent`](crate::selector::Selector::budget_spent)). Four reads of the
/// 64 KiB buffer are 256 KiB, as much as a client may owe us: a flooding client delays the
/// others by that much copying per turn, not by as long as it keeps sending. The bigger the
/// budget, the fewer the wakeups, and the longer everyone else waits for each of its turns.
pub const EDGE_READS_PER_TURN: usize = 4;

/// Why a callback runs, and what it may do on this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub token: Token,
    /// Hints, not promises: a read or write may still say `WouldBlock`, and an EOF or an error
    /// shows up as "ready" — the read or write itself then tells which.
    pub readable: bool,
    pub writable: bool,
    /// The cooperative budget: how many reads (or accepts) this call may make. Level-triggered:
    /// one, like Python's callbacks. Edge-triggered: [`EDGE_READS_PER_TURN`]. A callback that
    /// uses it all and may have more to do calls [`Selector::budget_spent`](crate::selector::Selector::budget_spent).
    pub budget: usize,
}
