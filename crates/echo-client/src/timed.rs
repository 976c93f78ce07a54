//! `client --clients N --every-ms M --for-secs S`: N clients connect at once; each sends
//! S×1000/M numbered lines, M ms apart, waits for each echo, and prints how long it took.
//! Against `sync echo`, client 2 waits until client 1 has sent all its lines and left, and
//! client 3 waits for both; against `select echo`, everyone is answered at once.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
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
/// run one after another, plus 10 s.
pub fn run_timed(plan: &TimedPlan) -> io::Result<Vec<ClientReport>> {
    let reports: Vec<ClientReport> = thread::scope(|scope| {
        let handles: Vec<_> = (1..=plan.clients)
            .map(|id| scope.spawn(move || run_client(plan, id)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| failed("client thread panicked"))
            })
            .collect()
    });
    println!("summary:");
    for (id, report) in (1..).zip(&reports) {
        let slowest = human(report.slowest);
        let (sent, answered) = (report.sent, report.answered);
        let error = report
            .error
            .as_deref()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default();
        println!("client {id}: {sent} sent, {answered} answered, slowest answer {slowest}{error}");
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

fn run_client(plan: &TimedPlan, id: usize) -> ClientReport {
    let mut report = ClientReport::default();
    if let Err(err) = talk(plan, id, &mut report) {
        report.error = Some(err.to_string());
    }
    report
}

/// How many messages each client sends: one per `every` over `duration`, at least one.
pub fn messages_per_client(plan: &TimedPlan) -> u32 {
    let count = plan.duration.as_millis() / plan.every.as_millis().max(1);
    u32::try_from(count).unwrap_or(u32::MAX).max(1)
}

/// Sends numbered messages `every` apart; each waits for its echo.
fn talk(plan: &TimedPlan, id: usize, report: &mut ClientReport) -> io::Result<()> {
    // A blocking server serves the clients one after another: the last one may wait for
    // all the others' runs. Allow that, and 10 s more.
    let patience =
        plan.duration * u32::try_from(plan.clients).unwrap_or(u32::MAX) + Duration::from_secs(10);
    let mut stream = connect(plan.addr, patience)?;
    let messages = messages_per_client(plan);
    let mut answer = Vec::new();
    for number in 1..=messages {
        let message = format!("client {id} message {number}\n");
        let sent_at = Instant::now();
        stream.write_all(message.as_bytes())?;
        report.sent += 1;
        answer.resize(message.len(), 0);
        stream.read_exact(&mut answer).map_err(|err| {
            io::Error::new(err.kind(), format!("no answer to message {number}: {err}"))
        })?;
        let took = sent_at.elapsed();
        if answer != message.as_bytes() {
            return Err(io::Error::other(format!("wrong echo for message {number}")));
        }
        report.answered += 1;
        report.slowest = report.slowest.max(took);
        println!("client {id}: message {number} answered in {}", human(took));

        if number < messages {
            thread::sleep((sent_at + plan.every).saturating_duration_since(Instant::now()));
        }
    }
    Ok(())
}
