//! Beazley's generator pipeline ("Generator Tricks for Systems Programmers"): how many bytes
//! were sent for the `ply-*.gz` downloads, over a tree of access logs — some plain, some
//! gzip, some bzip2 — without ever holding more than one line in memory.
//!
//! ```python
//! def gen_find(filepat, top):                  # names of matching files, recursively
//!     for path, dirlist, filelist in os.walk(top):
//!         for name in fnmatch.filter(filelist, filepat):
//!             yield os.path.join(path, name)
//!
//! def gen_open(filenames):                     # each one opened, decompressed if need be
//!     for name in filenames:
//!         if name.endswith(".gz"):    yield gzip.open(name, "rt")
//!         elif name.endswith(".bz2"): yield bz2.open(name, "rt")
//!         else:                       yield open(name)
//!
//! def gen_cat(sources):                        # their lines, one stream
//!     for src in sources:
//!         yield from src
//!
//! def gen_grep(pat, lines):                    # the lines that match
//!     patc = re.compile(pat)
//!     for line in lines:
//!         if patc.search(line):
//!             yield line
//!
//! filenames  = gen_find("access-log*", "www")
//! logfiles   = gen_open(filenames)
//! loglines   = gen_cat(logfiles)
//! patlines   = gen_grep(r"ply-.*\.gz", loglines)
//! bytecol    = (line.rsplit(None, 1)[1] for line in patlines)
//! bytes_sent = (int(x) for x in bytecol if x != '-')
//! print("Total", sum(bytes_sent))
//! ```
//!
//! Each generator becomes an iterator adapter, and the pipeline reads the same: nothing
//! runs until `sum` pulls the first value, and then every stage does just enough to hand
//! one item on. `yield from src` over a file's lines is `flat_map`; a generator expression
//! is `map` and `filter`. What Python leaves to exceptions, the items carry: each is an
//! `io::Result`, and `sum` stops at the first error.
//!
//! ```text
//! $ cargo run -q --example log_pipeline            # DIR PATTERN REGEX, defaults below
//! Total 1466259
//! $ cargo run -q --example log_pipeline -- examples/logs 'access-log*' 'python'
//! ```
//!
//! The sample tree is `examples/logs/` (see its README).

use std::error::Error;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::iter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bzip2::read::BzDecoder;
use clap::Parser;
use flate2::read::MultiGzDecoder;
use regex::Regex;

/// Sum the bytes column of the log lines matching REGEX, in the files named PATTERN
/// anywhere under DIR.
#[derive(Parser)]
struct Args {
    /// The directory to search, recursively.
    #[arg(default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/logs"))]
    dir: PathBuf,
    /// File names to read, as for fnmatch: `*` is any run of characters, `?` any one.
    #[arg(default_value = "access-log*")]
    pattern: String,
    /// The lines to count: those this regular expression finds something in.
    #[arg(default_value = r"ply-.*\.gz")]
    regex: String,
}

/// `gen_find`: the paths under `top` whose file name matches `pattern`, walking the tree
/// lazily (one directory listing at a time, in name order).
fn gen_find(pattern: Regex, top: &Path) -> impl Iterator<Item = io::Result<PathBuf>> {
    let mut directories = vec![top.to_path_buf()];
    // The entries of the directory being walked, in reverse name order (`pop` is next).
    let mut entries: Vec<PathBuf> = Vec::new();
    iter::from_fn(move || {
        loop {
            let Some(path) = entries.pop() else {
                let directory = directories.pop()?;
                match sorted_entries(&directory) {
                    Ok(listing) => entries = listing.into_iter().rev().collect(),
                    Err(err) => return Some(Err(err)),
                }
                continue;
            };
            if path.is_dir() {
                directories.push(path);
            } else if path
                .file_name()
                .is_some_and(|name| pattern.is_match(&name.to_string_lossy()))
            {
                return Some(Ok(path));
            }
        }
    })
}

fn sorted_entries(directory: &Path) -> io::Result<Vec<PathBuf>> {
    let mut paths = fs::read_dir(directory)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<io::Result<Vec<_>>>()?;
    paths.sort();
    Ok(paths)
}

/// `gen_open`: each file opened, decompressing `.gz` and `.bz2` on the fly.
fn gen_open(
    paths: impl Iterator<Item = io::Result<PathBuf>>,
) -> impl Iterator<Item = io::Result<Box<dyn BufRead>>> {
    paths.map(|path| {
        let path = path?;
        let file = File::open(&path)?;
        let reader: Box<dyn BufRead> = match path.extension().and_then(|ext| ext.to_str()) {
            Some("gz") => Box::new(BufReader::new(MultiGzDecoder::new(file))),
            Some("bz2") => Box::new(BufReader::new(BzDecoder::new(file))),
            _ => Box::new(BufReader::new(file)),
        };
        Ok(reader)
    })
}

/// `gen_cat`: the lines of every file, one after the other (`yield from` each file).
fn gen_cat(
    files: impl Iterator<Item = io::Result<Box<dyn BufRead>>>,
) -> impl Iterator<Item = io::Result<String>> {
    files.flat_map(|file| -> Box<dyn Iterator<Item = io::Result<String>>> {
        match file {
            Ok(reader) => Box::new(reader.lines()),
            Err(err) => Box::new(iter::once(Err(err))),
        }
    })
}

/// `gen_grep`: the lines `pattern` finds something in (errors go through, to stop the sum).
fn gen_grep(
    pattern: Regex,
    lines: impl Iterator<Item = io::Result<String>>,
) -> impl Iterator<Item = io::Result<String>> {
    lines.filter(move |line| match line {
        Ok(text) => pattern.is_match(text),
        Err(_) => true,
    })
}

/// fnmatch's patterns as a regular expression: `*` and `?`, everything else literal.
fn glob(pattern: &str) -> Result<Regex, regex::Error> {
    let mut regex = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => regex.push_str(".*"),
            '?' => regex.push('.'),
            c => regex.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    regex.push('$');
    Regex::new(&regex)
}

fn main() -> ExitCode {
    fdio::let_sigpipe_end_the_program(); // `log_pipeline | head -2` ends quietly
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            fdio::log!("log_pipeline: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let filenames = gen_find(glob(&args.pattern)?, &args.dir);
    let logfiles = gen_open(filenames);
    let loglines = gen_cat(logfiles);
    let patlines = gen_grep(Regex::new(&args.regex)?, loglines);
    // The bytes column is the last field; `-` means none were sent (304 Not Modified).
    let bytecol = patlines.map(|line| -> io::Result<String> {
        Ok(line?
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string())
    });
    let bytes_sent = bytecol
        .filter(|field| !matches!(field, Ok(field) if field == "-"))
        .map(|field| -> io::Result<u64> {
            let field = field?;
            field.parse().map_err(|_| {
                let message = format!("the bytes column {field:?} is not a number");
                io::Error::new(io::ErrorKind::InvalidData, message)
            })
        });
    let total: u64 = bytes_sent.sum::<io::Result<u64>>()?;
    println!("Total {total}");
    Ok(())
}
