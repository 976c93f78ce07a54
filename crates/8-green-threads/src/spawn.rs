//! A new green thread: its stack, the frame that starts it, the function it starts in, and
//! [`JoinHandle::join`], which waits for it to end.
//!
//! `spawn` maps a stack, writes onto it the frame a first switch expects
//! ([`Context::new`](crate::switch::Context::new)), and queues the green thread. Its first
//! switch "returns" into `green_main`, which runs the body inside `catch_unwind` — a panic
//! stops at the bottom of the green thread's own stack — stores the result for `join` (or
//! drops it, still inside `catch_unwind`, if no handle is left to take it), and switches to
//! the scheduler for the last time. The scheduler then unmaps the stack.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::thread;

use fdio::timeline::TaskTag;

use crate::overflow::GuardInfo;
use crate::runtime::{Green, park, with_runtime};
use crate::stack::{STACK_SIZE, Stack};
use crate::switch::{Context, switch};

/// Starts `body` as a new green thread; it runs when the scheduler next gets to it. A stack
/// is a mapping, which the OS may refuse (out of memory, or of mappings: `vm.max_map_count`).
///
/// # Panics
/// Outside [`run`](crate::runtime::run).
pub fn spawn<T: 'static>(body: impl FnOnce() -> T + 'static) -> io::Result<JoinHandle<T>> {
    start(None, body)
}

/// [`spawn`], with a name that the trace and a stack overflow report show.
pub fn spawn_named<T: 'static>(
    name: impl Into<String>,
    body: impl FnOnce() -> T + 'static,
) -> io::Result<JoinHandle<T>> {
    start(Some(name.into()), body)
}

fn start<T: 'static>(
    name: Option<String>,
    body: impl FnOnce() -> T + 'static,
) -> io::Result<JoinHandle<T>> {
    let stack = Stack::new(STACK_SIZE)?;
    let result: Rc<RefCell<Option<thread::Result<T>>>> = Rc::new(RefCell::new(None));
    let slot = Rc::clone(&result);
    // Every piece of the caller's code this green thread runs, runs inside `catch_unwind`,
    // so that a panic stops at the bottom of the green thread's own stack: the body, and the
    // output's destructor, which runs here if no `JoinHandle` is left to take the output.
    let body: Box<dyn FnOnce()> = Box::new(move || {
        let finish = move || {
            let output = panic::catch_unwind(AssertUnwindSafe(body));
            *slot.borrow_mut() = Some(output);
            drop(slot); // the last owner once the handle is gone: the output is dropped here
        };
        // The output's destructor panicked: the panic hook has printed it, no one waits for
        // it. (Its payload is dropped out here: if that panics too, the process aborts. std
        // aborts one step earlier, when a detached thread's result panics on drop.)
        let _ = panic::catch_unwind(AssertUnwindSafe(finish));
    });
    // Safety: the top of a fresh stack, page-aligned, that nothing else uses.
    let context = unsafe { Context::new(stack.top(), green_main) };
    let green = with_runtime(|runtime| {
        let id = runtime.next_id.get();
        runtime.next_id.set(id + 1);
        let guard = GuardInfo::new(id, name.as_deref(), stack.guard(), stack.usable());
        let green = Rc::new(Green {
            context,
            stack: RefCell::new(Some(stack)),
            body: Cell::new(Some(body)),
            finished: Cell::new(false),
            queued: Cell::new(false),
            joiner: Cell::new(None),
            guard,
            runtime: runtime.id,
            tag: name
                .as_deref()
                .map_or_else(|| TaskTag::numbered(id), TaskTag::named),
        });
        runtime.trace.say(|| format!("scheduler: spawned {green}"));
        runtime.unpark(&green);
        green
    });
    Ok(JoinHandle { green, result })
}

/// Where every green thread starts: the first switch to it "returns" here (see
/// `Context::new`). It never returns: its last act is a switch away for good.
extern "C" fn green_main() -> ! {
    let body = with_runtime(|runtime| runtime.current().body.take());
    if let Some(body) = body {
        body(); // catches its own panics: nothing unwinds out of here
    }
    // Everything `body` owned is dropped by now: nothing on this stack needs its destructor,
    // so the stack can be unmapped as it is.
    let (from, to) = with_runtime(|runtime| {
        let green = runtime.current();
        green.finished.set(true);
        if let Some(joiner) = green.joiner.take() {
            runtime.unpark(&joiner);
        }
        let from: *const Context = &green.context;
        (from, &raw const runtime.scheduler)
    });
    // Safety: as in `park`; and the scheduler never resumes a finished green thread.
    unsafe { switch(&*from, &*to) };
    // A finished green thread was resumed: the scheduler is broken, and nothing is safe.
    std::process::abort()
}

/// Owns a green thread's result: [`join`](Self::join) waits for it.
pub struct JoinHandle<T> {
    pub(crate) green: Rc<Green>,
    result: Rc<RefCell<Option<thread::Result<T>>>>,
}

impl<T> JoinHandle<T> {
    /// Parks until the green thread has finished; its output, or the panic that ended it.
    ///
    /// # Panics
    /// Outside a green thread, and for a green thread of a runtime that has ended (returned
    /// by its `main`): abandoned, it will never finish.
    pub fn join(self) -> thread::Result<T> {
        while !self.green.finished.get() {
            with_runtime(|runtime| {
                assert!(
                    runtime.id == self.green.runtime,
                    "join: {} belongs to a runtime that has ended: it will never finish",
                    self.green
                );
                self.green.joiner.set(Some(runtime.current()));
            });
            park();
        }
        self.try_take()
            .expect("a finished green thread leaves its result")
    }

    /// Whether the green thread has finished.
    pub fn is_finished(&self) -> bool {
        self.green.finished.get()
    }

    pub(crate) fn try_take(&self) -> Option<thread::Result<T>> {
        self.result.borrow_mut().take()
    }
}

/// A panic's message, for a line on stderr: `join` gives the payload back as `Box<dyn Any>`.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "a panic with a payload that is not text"
    }
}
