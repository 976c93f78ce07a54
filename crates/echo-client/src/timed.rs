//! `client --clients N --every-ms M --for-secs S`: N clients connect, one after another in
//! order (so a server that accepts in turn meets client 1 first); each sends S×1000/M
//! numbered lines, M ms apart, waits for each echo, and prints how long it took. Against
//! `sync echo`, client 2 waits until client 1 has sent all its lines and left, and client 3
//! waits for both; against `select echo`, everyone is answered at once.
//!
//! Each client runs on a thread of its own and only measures; it sends its lines to this
//! thread, the only one that prints. So when stdout fails (`| head -1` closed it, or the disk
//! is full), printing stops in one place, every client stops at its next answer (nobody
//! takes its line any more), and the run ends with that error instead of a panic.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::{connect, human};

/// What the timed clients do.
#[derive(Debug, Clone)]
pub struct TimedPlan {
    pub addr: SocketAddr,
    pub clients: usize,
    pub every: Duration,
    pub duration: Duration,
}

/// What one client saw.
#[derive(Debug, Default, Clone)]
pub struct ClientReport {
    pub sent: u32,
    pub answered: u32,
    pub slowest: Duration,
    pub error: Option<String>,
}

/// Runs the plan, printing one line per answer and a summary per client. Fails if any client
/// could not connect, got a wrong echo, or waited for an answer longer than every client's
/// run one after another, plus 10 s; if a client's thread cannot be started; or if stdout
/// fails.
pub fn run_timed(plan: &TimedPlan) -> io::Result<Vec<ClientReport>> {
    let mut stdout = io::stdout().lock();
    let (reports, printed) = thread::scope(|scope| {
        let (printer, lines) = mpsc::channel();
        let mut clients = Vec::with_capacity(plan.clients);
        let mut started = Ok(());
        for id in 1..=plan.clients {
            let printer = printer.clone();
            let (connected, is_connected) = mpsc::channel();
            let spawned = thread::Builder::new()
                .spawn_scoped(scope, move || run_client(plan, id, &printer, connected));
            match spawned {
                Ok(client) => {
                    clients.push(client);
                    // The next client connects once this one has (or has failed to: its
                    // sender is dropped), so they reach the server in the order of their ids.
                    let _ = is_connected.recv_timeout(patience(plan));
                }
                // Out of threads, or of memory for their stacks: start no more, and stop
                // those already running (below) rather than panic.
                Err(err) => {
                    let total = plan.clients;
                    let why = format!("cannot start client {id} of {total}: {err}");
                    started = Err(io::Error::new(err.kind(), why));
                    break;
                }
            }
        }
        drop(printer);
        // The lines come until every client has finished (dropping its sender), or until
        // stdout fails.
        let printed =
            started.and_then(|()| lines.iter().try_for_each(|line| writeln!(stdout, "{line}")));
        // A client still running stops at its next answer: nobody takes its line any more.
        drop(lines);
        let reports: Vec<ClientReport> = clients
            .into_iter()
            .map(|client| {
                client
                    .join()
                    .unwrap_or_else(|_| failed("client thread panicked"))
            })
            .collect();
        (reports, printed)
    });
    printed?;
    writeln!(stdout, "summary:")?;
    for (id, report) in (1..).zip(&reports) {
        let slowest = human(report.slowest);
        let (sent, answered) = (report.sent, report.answered);
        let error = report
            .error
            .as_deref()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default();
        writeln!(
            stdout,
            "client {id}: {sent} sent, {answered} answered, slowest answer {slowest}{error}"
        )?;
    }
    let failures = reports
        .iter()
        .filter(|report| report.error.is_some())
        .count();
    if failures > 0 {
        return Err(io::Error::other(format!(
            "{failures} of {} clients failed",
            plan.clients
        )));
    }
    Ok(reports)
}

fn failed(error: &str) -> ClientReport {
    ClientReport {
        error: Some(error.to_string()),
        ..ClientReport::default()
    }
}

fn run_client(
    plan: &TimedPlan,
    id: usize,
    printer: &Sender<String>,
    connected: Sender<()>,
) -> ClientReport {
    let mut report = ClientReport::default();
    if let Err(err) = talk(plan, id, printer, connected, &mut report) {
        report.error = Some(err.to_string());
    }
    report
}

/// How many messages each client sends: one per `every` over `duration`, at least one.
pub fn messages_per_client(plan: &TimedPlan) -> u32 {
    let count = plan.duration.as_millis() / plan.every.as_millis().max(1);
    u32::try_from(count).unwrap_or(u32::MAX).max(1)
}

/// How long a client waits for an answer: a blocking server serves the clients one after
/// another, so the last one may wait for all the others' runs. That, and 10 s more.
fn patience(plan: &TimedPlan) -> Duration {
    let clients = u32::try_from(plan.clients).unwrap_or(u32::MAX);
    plan.duration
        .saturating_mul(clients)
        .saturating_add(Duration::from_secs(10))
}

/// Connects (then says so on `connected`) and sends numbered messages `every` apart; each
/// waits for its echo, and its line goes to `printer`.
fn talk(
    plan: &TimedPlan,
    id: usize,
    printer: &Sender<String>,
    connected: Sender<()>,
    report: &mut ClientReport,
) -> io::Result<()> {
    let patience = patience(plan);
    let mut stream = connect(plan.addr, patience)?;
    let _ = connected.send(());
    let messages = messages_per_client(plan);
    let mut answer = Vec::new();
    for number in 1..=messages {
        let message = format!("client {id} message {number}\n");
        let sent_at = Instant::now();
        stream.write_all(message.as_bytes())?;
        report.sent += 1;
        answer.resize(message.len(), 0);
        stream
            .read_exact(&mut answer)
            .map_err(|err| no_answer(number, err, patience))?;
        let took = sent_at.elapsed();
        if answer != message.as_bytes() {
            return Err(io::Error::other(format!("wrong echo for message {number}")));
        }
        report.answered += 1;
        report.slowest = report.slowest.max(took);
        let line = format!("client {id}: message {number} answered in {}", human(took));
        if printer.send(line).is_err() {
            // Nobody prints any more: stdout failed, and that error ends the run.
            return Ok(());
        }

        if number < messages {
            thread::sleep(plan.every.saturating_sub(sent_at.elapsed()));
        }
    }
    Ok(())
}

/// Why message `number` got no answer. A read that times out says `WouldBlock` (`Resource
/// temporarily unavailable`): say what it means, and after how long.
fn no_answer(number: u32, err: io::Error, patience: Duration) -> io::Error {
    let why = match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("timed out after {}", human(patience))
        }
        _ => err.to_string(),
    };
    io::Error::new(err.kind(), format!("no answer to message {number}: {why}"))
}
