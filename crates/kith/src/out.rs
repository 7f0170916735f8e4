//! Standard output for the client subcommands.
//!
//! Owns one rule: output into a pipe whose reader has gone (`kith kv ls | head -3`) ends the
//! program quietly with status 0, as it would for `ls` or `grep`. Rust ignores SIGPIPE, so
//! the closed pipe arrives as a `BrokenPipe` write error; `println!` would panic on it.
//! Every line a subcommand prints goes through [`outln!`]; errors that carry a
//! `BrokenPipe` up to `main` are recognised by [`is_closed_pipe`].
//!
//! Refuses: diagnostics (those go to standard error, unchanged).

use std::fmt;
use std::io::{self, Write};

/// `println!` that ends the program quietly (status 0) when standard output is closed.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

/// Writes one line to standard output; see [`outln!`].
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}") {
        exit_on_write_error(&e);
    }
}

/// Ends the program after a failed write to standard output: quietly with status 0 when
/// the reader has gone, else with the error and status 1.
pub fn exit_on_write_error(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("kith: cannot write to standard output: {e}");
    std::process::exit(1);
}

/// Whether `e` was caused by writing into a closed pipe.
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
