//! The interactive sessions the README shows: each function performs the steps its text
//! describes — start the server, connect the clients, type the lines — and returns what the
//! programs printed (a server's stdout, then its stderr), for `tests/readme.rs` to find the
//! shown lines in, in order.

use crate::common::{PATIENCE, Server, wait_until};
use echo_client::connect;

/// Every session a text may name.
pub const NAMES: &[&str] = &["select-echo"];

/// Performs session `name`; what the programs printed, line by line.
pub fn run(name: &str) -> Result<Vec<String>, String> {
    match name {
        "select-echo" => select_echo(),
        _ => Err(format!("no session named {name}")),
    }
}

/// `select echo`: one client connects and leaves.
fn select_echo() -> Result<Vec<String>, String> {
    let mut server = Server::start(env!("CARGO_BIN_EXE_select"), &["echo"]);
    let client = connect(server.addr, PATIENCE).map_err(|err| err.to_string())?;
    drop(client);
    wait_until(|| server.process.count_stderr("closed") == 1);
    Ok(printed(&mut server))
}

/// The server's `listening on` line, then its stderr so far.
fn printed(server: &mut Server) -> Vec<String> {
    let mut lines = vec![format!("listening on {}", server.addr)];
    lines.extend(server.process.stderr());
    lines
}
