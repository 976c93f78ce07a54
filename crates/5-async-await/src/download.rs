//! The Python lesson's image downloader, offline: fetch `count` resources from a slow HTTP
//! server, first one after another with blocking sockets, then all at once as tasks.
//!
//! The server runs in this process, on its own thread and its own runtime, on 127.0.0.1:0:
//! each response waits `delay` before it is sent, like a far-away server would. One by one,
//! the waits add up; as tasks, they overlap. HTTP is parsed with `httparse`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use fdio::Trace;

use crate::combinators::join_all;
use crate::executor::{block_on, spawn};
use crate::net::{TcpListener, TcpStream};
use crate::time::sleep;

/// The size of each "image".
const IMAGE_BYTES: usize = 16 * 1024;

/// Runs both downloads and prints how long each took.
pub fn run(count: u32, delay: Duration) -> io::Result<()> {
    match download_twice(count, delay) {
        // The reader went away (`download | head -1`): a normal way to end, as in `clock`.
        // Only stdout fails so here: a failed download is reported as `image N: …`.
        Err(err) if fdio::reader_went_away(&err) => Ok(()),
        other => other,
    }
}

/// Writes with `writeln!(out, …)?` rather than `println!`, which panics when stdout fails
/// (a closed pipe, a full disk): the error ends the program instead.
fn download_twice(count: u32, delay: Duration) -> io::Result<()> {
    let mut out = io::stdout();
    let addr = start_server(delay)?;
    writeln!(
        out,
        "a local server on {addr} answers each request after {delay:?}"
    )?;

    let started = Instant::now();
    for n in 0..count {
        check(n, &fetch_blocking(addr, n).map_err(|err| failed(n, err))?)?;
    }
    let sequential = started.elapsed().as_secs_f64();
    writeln!(
        out,
        "Synchronous download of {count} images took: {sequential:.2} seconds."
    )?;

    let started = Instant::now();
    block_on(Trace::new(false), async move {
        // `asyncio.gather(*(download(n) for n in range(count)))`: all start now; the
        // results come back in the order of the requests.
        let downloads = join_all((0..count).map(|n| spawn(fetch(addr, n)))).await;
        for (n, download) in (0..).zip(downloads) {
            let body = download.map_err(io::Error::other)?;
            check(n, &body.map_err(|err| failed(n, err))?)?;
        }
        Ok::<(), io::Error>(())
    })??;
    let concurrent = started.elapsed().as_secs_f64();
    writeln!(
        out,
        "Asynchronous download of {count} images took: {concurrent:.2} seconds."
    )?;
    writeln!(
        out,
        "The asynchronous download was {:.1}× faster.",
        sequential / concurrent
    )?;
    Ok(())
}

/// A download's error, saying which image: `image 3: Connection reset by peer`.
fn failed(n: u32, err: io::Error) -> io::Error {
    io::Error::other(format!("image {n}: {err}"))
}

/// The bytes of image `n`: its number, repeated, so a mix-up would show.
fn image(n: u32) -> Vec<u8> {
    format!("image {n:04} ")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(IMAGE_BYTES)
        .collect()
}

fn check(n: u32, body: &[u8]) -> io::Result<()> {
    if body == image(n) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "image {n}: the body is not the one served"
        )))
    }
}

fn request(addr: SocketAddr, n: u32) -> String {
    format!("GET /images/{n}.png HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
}

/// One download with blocking `std::net`: the thread waits for the whole delay.
fn fetch_blocking(addr: SocketAddr, n: u32) -> io::Result<Vec<u8>> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.write_all(request(addr, n).as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    body_of(&response)
}

/// One download as a task: while it waits, the other tasks run.
async fn fetch(addr: SocketAddr, n: u32) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request(addr, n).as_bytes()).await?;
    let mut response = Vec::new();
    let mut buf = [0; 16 * 1024];
    loop {
        match stream.read(&mut buf).await? {
            0 => break,
            read => response.extend_from_slice(&buf[..read]),
        }
    }
    body_of(&response)
}

/// The body of a complete `200 OK` response, checked against its `Content-Length`.
fn body_of(response: &[u8]) -> io::Result<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(response).map_err(io::Error::other)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => {
            return Err(io::Error::other("the response ended inside its headers"));
        }
    };
    if parsed.code != Some(200) {
        return Err(io::Error::other(format!(
            "the server answered {:?}",
            parsed.code
        )));
    }
    let length = parsed
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-length"))
        .and_then(|header| {
            std::str::from_utf8(header.value)
                .ok()?
                .parse::<usize>()
                .ok()
        })
        .ok_or_else(|| io::Error::other("no Content-Length"))?;
    let body = &response[head_len..];
    if body.len() != length {
        return Err(io::Error::other(format!(
            "{} body bytes, Content-Length says {length}",
            body.len()
        )));
    }
    Ok(body.to_vec())
}

/// Starts the slow server on its own thread and runtime; returns its address.
fn start_server(delay: Duration) -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    thread::Builder::new()
        .name("slow server".into())
        .spawn(move || {
            if let Err(err) = block_on(Trace::new(false), serve(listener, delay)).and_then(|r| r) {
                fdio::log!("slow server: {err}");
            }
        })?;
    Ok(addr)
}

async fn serve(listener: std::net::TcpListener, delay: Duration) -> io::Result<()> {
    let mut listener = TcpListener::from_std(listener)?;
    loop {
        let (stream, _) = listener.accept().await?;
        spawn(async move {
            if let Err(err) = respond(stream, delay).await {
                fdio::log!("slow server: {err}");
            }
        });
    }
}

/// Reads one request, waits `delay`, sends the image it names.
async fn respond(mut stream: TcpStream, delay: Duration) -> io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0; 4096];
    let number = loop {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        request.extend_from_slice(&buf[..read]);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Request::new(&mut headers);
        if parsed
            .parse(&request)
            .map_err(io::Error::other)?
            .is_complete()
        {
            break image_number(parsed.path.unwrap_or_default());
        }
    };
    sleep(delay).await;
    let (status, body) = match number {
        Some(n) => ("200 OK", image(n)),
        None => ("404 Not Found", b"no such image\n".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown(Shutdown::Write)
}

/// `/images/7.png` → 7.
fn image_number(path: &str) -> Option<u32> {
    path.strip_prefix("/images/")?
        .strip_suffix(".png")?
        .parse()
        .ok()
}
