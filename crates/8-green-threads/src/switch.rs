//! The context switch: how one green thread stops and another goes on, in 21 instructions.
//!
//! A green thread that is not running is nothing but its stack: the frames of every function
//! it is in the middle of, and — pushed on top by [`switch`] when it stopped — the few
//! registers a function call must give back unchanged. So all the scheduler keeps of it is one
//! number: where that stack ends now, its stack pointer ([`Context`]).
//!
//! (Samson's *Asynchronous Programming in Rust*, chapter 5, moves the registers into a struct
//! per thread instead; pushing them on the stack, as Boost.Context does, leaves a single
//! number to keep.)
//!
//! `switch(from, to)` is called like any function. It pushes the registers on the caller's
//! stack, writes the stack pointer into `from`, loads `to`'s stack pointer, pops the registers
//! *that* stack had pushed, and returns — on the other stack, so into whatever call of
//! `switch` the other green thread made when it stopped. Each side sees an ordinary call that
//! took a while to return.
//!
//! ```text
//!  green thread A's stack            green thread B's stack
//!  ┌──────────────────────┐          ┌──────────────────────┐
//!  │ A's frames …         │          │ B's frames …         │
//!  │ return into A's code │          │ return into B's code │ ← `ret` here, once rsp = B.sp
//!  │ rbp rbx r12–r15      │ pushed   │ rbp rbx r12–r15      │ popped
//!  │ MXCSR, x87 CW        │          │ MXCSR, x87 CW        │
//!  └──────────────────────┘ ← A.sp   └──────────────────────┘ ← B.sp
//!        switch(&A, &B):  push …; A.sp = rsp; rsp = B.sp; pop …; ret
//! ```
//!
//! **Which registers.** The x86-64 System V ABI splits registers into caller-saved (rax, rcx,
//! rdx, rsi, rdi, r8–r11, every xmm register: a caller that needs them after a call saves
//! them itself, so the compiler already treats them as lost across our call) and callee-saved
//! (rbx, rbp, r12–r15, rsp, and the control bits of MXCSR and of the x87 FPU control word: a
//! called function must give them back as it found them). `switch` saves exactly the second
//! list. The two control words hold the floating-point rounding mode and exception masks:
//! without them, a green thread that set "round toward zero" would change the arithmetic of
//! every other green thread that runs after it. (Boost.Context saves them too; Go's switch and
//! the corosensei crate do not. Their four instructions alone take about as long as a whole
//! switch here — `cargo run --release -p bench -- switches` — but inside it they overlap
//! with the rest: taken out, the switch was not measurably faster.) Nothing else is per
//! thread in hardware that our code uses:
//! `fs`, the thread-local storage base, belongs to the OS thread, which all our green threads
//! share — see the lesson text on thread-locals.
//!
//! **A new green thread** has never called `switch`, so [`Context::new`] writes onto its empty
//! stack what such a call would have left: zeroed registers, the ABI's initial control words,
//! and as return address the green thread's entry function, with 0 above it as *its* return
//! address — a backtrace ends there. The first switch to it "returns" into its entry function.
//!
//! Only x86-64 is written; elsewhere [`SUPPORTED`] is false and the runtime refuses to start
//! (an aarch64 switch would save x19–x29, the link register, sp and d8–d15 the same way; it
//! is not written here because it could not be tested here).

use std::cell::Cell;

/// Whether this machine has a context switch: x86-64 only.
pub const SUPPORTED: bool = cfg!(target_arch = "x86_64");

/// A switched-out green thread (or the scheduler): the stack pointer it stopped at. Its
/// registers are on that stack.
pub struct Context {
    // Off x86-64 no switch reads it (the runtime refuses to start there).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    stack_pointer: Cell<*mut u8>,
}

/// The MXCSR value a new thread starts with (System V ABI, "Initial state"): every
/// floating-point exception masked, round to nearest.
const INITIAL_MXCSR: u64 = 0x1F80;

/// The x87 control word a new thread starts with: exceptions masked, round to nearest,
/// 64-bit mantissa.
const INITIAL_X87_CONTROL: u64 = 0x037F;

impl Context {
    /// A context to switch *from*: [`switch`] fills it in when it saves the running code.
    pub const fn empty() -> Context {
        Context {
            stack_pointer: Cell::new(std::ptr::null_mut()),
        }
    }

    /// A context that, when switched to, starts `entry` on the empty stack whose highest
    /// address is `top`.
    ///
    /// # Safety
    /// `top` is 16-byte aligned, and the 72 bytes below it are writable memory that nothing
    /// else uses: the top of a fresh stack.
    pub unsafe fn new(top: *mut u8, entry: extern "C" fn() -> !) -> Context {
        // What `switch` pops, from the lowest address up, then its `ret` target, then the
        // return address `entry` finds above it. `ret` leaves rsp at `top - 8`, which is
        // 8 more than a multiple of 16: what the ABI promises a function on entry.
        let frame: [u64; 9] = [
            INITIAL_MXCSR | (INITIAL_X87_CONTROL << 32), // MXCSR in 4 bytes, x87 CW after it
            0,                                           // r15
            0,                                           // r14
            0,                                           // r13
            0,                                           // r12
            0,                                           // rbx
            0,                                           // rbp: the end of a frame-pointer chain
            entry as usize as u64,                       // where `switch`'s `ret` goes
            0, // `entry`'s own return address: none, a backtrace stops here
        ];
        let stack_pointer = top.wrapping_sub(size_of_val(&frame));
        // Safety: the caller gives us the 72 bytes below `top`, aligned (see `# Safety`).
        unsafe { stack_pointer.cast::<[u64; 9]>().write(frame) };
        Context {
            stack_pointer: Cell::new(stack_pointer),
        }
    }
}

/// Saves the running code's registers on its stack and its stack pointer in `from`, then
/// resumes the code saved in `to`. Returns when some later call switches back to `from`.
///
/// # Safety
/// `to` was filled in by an earlier `switch` (or made by [`Context::new`]) and has not been
/// resumed since: a context runs at most once per save. Its stack is still mapped, and holds
/// frames that are still valid. `from` is the context the caller will be resumed through.
/// No panic may unwind across this call: each green thread catches its own at its entry.
#[cfg(target_arch = "x86_64")]
pub unsafe fn switch(from: &Context, to: &Context) {
    // Safety: the caller upholds the contract above; `from`'s cell is valid for a write.
    unsafe { switch_stacks(from.stack_pointer.as_ptr(), to.stack_pointer.get()) }
}

/// See [`switch`]. Without an x86-64 switch the runtime refuses to start, so no context is
/// ever switched to: this is never called.
///
/// # Safety
/// None needed: it only panics.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn switch(_from: &Context, _to: &Context) {
    unreachable!("no context switch on this architecture (the runtime refuses to start)")
}

/// `switch(save_to = rdi, load_from = rsi)`, in the ABI's own terms.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
unsafe extern "sysv64" fn switch_stacks(save_to: *mut *mut u8, load_from: *mut u8) {
    core::arch::naked_asm!(
        // We were called: our return address is on top of the stack. Push the callee-saved
        // registers after it.
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        // And the two floating-point control words: MXCSR (SSE) in 4 bytes, x87's in 2.
        "sub rsp, 8",
        "stmxcsr [rsp]",
        "fnstcw [rsp + 4]",
        // Everything this code needs to go on later is on its stack now: keep where it ends.
        "mov [rdi], rsp",
        // The switch itself: from this instruction on, we run on the other stack.
        "mov rsp, rsi",
        // Pop what the other side pushed when it switched away, in the reverse order.
        "ldmxcsr [rsp]",
        "fldcw [rsp + 4]",
        "add rsp, 8",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        // On top now: the other side's return address. Return into its call of `switch`.
        "ret",
    )
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use std::hint::black_box;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::stack::Stack;

    // The two sides of `probe`'s round trip, read and written by the assembly below. Only
    // the test `switch_keeps_every_callee_saved_register` uses them.
    static PROBE_SIDE: AtomicUsize = AtomicUsize::new(0);
    static PROBE_OTHER: AtomicUsize = AtomicUsize::new(0);

    /// Loads known values into rbx, rbp and r12–r15, switches to `PROBE_OTHER` (which fills
    /// them with junk and switches back), and writes what the six registers hold afterwards
    /// into `seen`. Written in assembly so that the registers are certainly live across the
    /// call: compiled code might keep its values elsewhere.
    #[unsafe(naked)]
    unsafe extern "sysv64" fn probe(seen: *mut [u64; 6]) {
        core::arch::naked_asm!(
            "push rbp",
            "push rbx",
            "push r12",
            "push r13",
            "push r14",
            "push r15",
            "push rdi", // 7 pushes after the return address: rsp is 16-aligned for the call
            "mov rbx, 0x1111111111111111",
            "mov rbp, 0x2222222222222222",
            "mov r12, 0x3333333333333333",
            "mov r13, 0x4444444444444444",
            "mov r14, 0x5555555555555555",
            "mov r15, 0x6666666666666666",
            "lea rdi, [rip + {side}]",
            "mov rsi, [rip + {other}]",
            "call {switch}",
            "pop rdi",
            "mov [rdi], rbx",
            "mov [rdi + 8], rbp",
            "mov [rdi + 16], r12",
            "mov [rdi + 24], r13",
            "mov [rdi + 32], r14",
            "mov [rdi + 40], r15",
            "pop r15",
            "pop r14",
            "pop r13",
            "pop r12",
            "pop rbx",
            "pop rbp",
            "ret",
            side = sym PROBE_SIDE,
            other = sym PROBE_OTHER,
            switch = sym switch_stacks,
        )
    }

    /// The other side: fills the six registers with junk and switches back, for ever.
    #[unsafe(naked)]
    extern "C" fn clobber() -> ! {
        core::arch::naked_asm!(
            "sub rsp, 8", // entered as if called: align rsp to 16 for the calls below
            "2:",
            "mov rbx, -1",
            "mov rbp, -2",
            "mov r12, -3",
            "mov r13, -4",
            "mov r14, -5",
            "mov r15, -6",
            "lea rdi, [rip + {other}]",
            "mov rsi, [rip + {side}]",
            "call {switch}",
            "jmp 2b",
            side = sym PROBE_SIDE,
            other = sym PROBE_OTHER,
            switch = sym switch_stacks,
        )
    }

    /// Every callee-saved register holds, after a round trip through `switch`, the value it
    /// held before, although the other side put junk in each: take any `push`/`pop` pair out
    /// of `switch_stacks` and the register it saved comes back as junk here.
    #[test]
    fn switch_keeps_every_callee_saved_register() {
        let stack = Stack::new(64 * 1024).unwrap();
        // Safety: the top of a fresh stack.
        let other = unsafe { Context::new(stack.top(), clobber) };
        PROBE_OTHER.store(other.stack_pointer.get() as usize, Ordering::SeqCst);
        for _ in 0..1000 {
            let mut seen = [0; 6];
            // Safety: `PROBE_OTHER` holds a context made for `clobber` or saved by it, on
            // `stack`, which lives until the end of the test.
            unsafe { probe(&mut seen) };
            assert_eq!(
                seen.map(|value| format!("{value:#x}")),
                [
                    "0x1111111111111111",
                    "0x2222222222222222",
                    "0x3333333333333333",
                    "0x4444444444444444",
                    "0x5555555555555555",
                    "0x6666666666666666"
                ],
                "rbx, rbp, r12, r13, r14, r15 after a switch"
            );
        }
    }

    thread_local! {
        static MAIN: Context = const { Context::empty() };
        static OTHER: Cell<*const Context> = const { Cell::new(std::ptr::null()) };
        static OTHER_SUM: Cell<u64> = const { Cell::new(0) };
    }

    const SWITCHES: u64 = 1_000_000;

    /// Twelve values that change on every round, all live across `between()`, folded into one
    /// sum: more values than there are callee-saved registers, so some live on the stack.
    #[inline(never)]
    fn live_values(rounds: u64, seed: u64, mut between: impl FnMut()) -> u64 {
        let [
            mut a,
            mut b,
            mut c,
            mut d,
            mut e,
            mut f,
            mut g,
            mut h,
            mut i,
            mut j,
            mut k,
            mut l,
        ] = black_box([seed; 12]);
        let mut sum = 0u64;
        for round in 0..rounds {
            a = a.wrapping_add(round);
            b = b.wrapping_mul(3).wrapping_add(a);
            c ^= b.rotate_left(7);
            d = d.wrapping_add(c);
            e = e.wrapping_mul(5) ^ d;
            f = f.rotate_left(3).wrapping_add(e);
            g ^= f.wrapping_mul(7);
            h = h.wrapping_add(g);
            i = i.rotate_left(11) ^ h;
            j = j.wrapping_add(i);
            k ^= j.wrapping_mul(13);
            l = l.wrapping_add(k);
            between();
            sum = sum
                .wrapping_mul(31)
                .wrapping_add(a ^ b ^ c ^ d ^ e ^ f ^ g ^ h ^ i ^ j ^ k ^ l);
        }
        sum
    }

    extern "C" fn other_side() -> ! {
        let sum = live_values(SWITCHES, 2, || {
            let other = OTHER.get();
            // Safety: the test's main side made `OTHER` and waits in `switch` for us.
            MAIN.with(|main| unsafe { switch(&*other, main) });
        });
        OTHER_SUM.set(sum);
        let other = OTHER.get();
        // Safety: as above; this side is never resumed after this.
        MAIN.with(|main| unsafe { switch(&*other, main) });
        unreachable!("the test does not resume the other side after its last round")
    }

    /// Two sides switch back and forth a million times, each with twelve values live across
    /// every switch; both end with the sums they get without switching. (A debug build keeps
    /// the values on the stack, an optimised one mostly in rbx, rbp, r12–r15: run the tests
    /// with `--release` to exercise those too.)
    #[test]
    fn many_live_values_survive_a_million_switches() {
        let stack = Stack::new(64 * 1024).unwrap();
        // Safety: the top of a fresh stack.
        let other = unsafe { Context::new(stack.top(), other_side) };
        OTHER.set(&other);
        let sum = live_values(SWITCHES, 1, || {
            // Safety: `other` was made for `other_side` or saved by it, and is not running.
            MAIN.with(|main| unsafe { switch(main, &other) });
        });
        // Its last round: it folds its sum and switches back once more.
        // Safety: as above.
        MAIN.with(|main| unsafe { switch(main, &other) });
        assert_eq!(sum, live_values(SWITCHES, 1, || ()));
        assert_eq!(OTHER_SUM.get(), live_values(SWITCHES, 2, || ()));
    }
}
