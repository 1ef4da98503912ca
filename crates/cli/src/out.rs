//! Writing to stdout without a panic when the reader has gone (`ipsla probe ... | head -1`):
//! `println!` panics on a broken pipe, these return the error, and `main` exits quietly on it
//! (status 141, what a shell reports for a command that SIGPIPE ended), as other Unix tools do.

use std::fmt::Display;
use std::io::{self, Write};

/// Writes `s` to stdout and flushes, so that a closed pipe is seen here, not at exit.
pub fn print(s: impl Display) -> io::Result<()> {
    let mut o = io::stdout().lock();
    write!(o, "{s}")?;
    o.flush()
}

/// [`print`] with a newline.
pub fn println(s: impl Display) -> io::Result<()> {
    print(format_args!("{s}\n"))
}

/// Text on stderr; a closed stderr is not worth failing (or panicking) for.
pub fn eprint(s: impl Display) {
    let _ = write!(io::stderr().lock(), "{s}");
}

/// [`eprint`] with a newline.
pub fn eprintln(s: impl Display) {
    eprint(format_args!("{s}\n"));
}

/// True when `e` is (or was caused by) writing into a pipe nobody reads any more.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe))
}

/// The exit status of a command that stopped because its reader went away (128 + SIGPIPE).
pub const BROKEN_PIPE_STATUS: u8 = 141;
