//! The `twin` command line: one module per command, each an `Args` struct with a `run`.
//! Ids on the command line and in its output are the input file's own user and item ids;
//! the dense indices stay inside the engine.

pub mod bench;
pub mod cluster;
pub mod demo;
pub mod eval;
pub mod gen;
pub mod import;
pub mod info;
pub mod init;
pub mod lifelong;
pub mod lifelong_mix;
pub mod loadtest;
pub mod plot;
pub mod score;
pub mod serve;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result};

use twin_engine::data::{self, Dataset};

/// The first 8 bytes of a file (zeros if shorter): the magic of our own formats.
pub fn magic_of(path: &Path) -> Result<[u8; 8]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut m = [0u8; 8];
    let n = f.read(&mut m).with_context(|| format!("{}", path.display()))?;
    if n < 8 {
        m = [0; 8];
    }
    Ok(m)
}

/// A dataset file, or a raw log converted on the fly (its reader chosen by content).
pub fn load_data(path: &Path) -> Result<Dataset> {
    if &magic_of(path)? == data::format::MAGIC {
        Ok(Dataset::load(path)?)
    } else {
        Ok(data::read_log(path, None)?)
    }
}

/// An error as one line: the chain of contexts, outermost first, each level printed only when
/// its text is not already part of the level above (`Error::Io` and `Error::Driver` print
/// their source themselves). The chain stops at `Error::Driver`: below it are the driver's own
/// error types, whose text its message already holds, in other words.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut above = String::new();
    for level in e.chain() {
        let text = level.to_string();
        if !text.is_empty() && !above.contains(&text) {
            parts.push(text.clone());
        }
        above = text;
        if matches!(level.downcast_ref::<twin_engine::Error>(), Some(twin_engine::Error::Driver { .. })) {
            break;
        }
    }
    parts.join(": ")
}

/// A closed pipe (`twin info FILE | head`) ends the process quietly, as in other Unix tools,
/// instead of `println!` panicking on EPIPE. Not for `serve` and `loadtest`, whose sockets
/// must see EPIPE as an error.
pub fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any thread is started; no
    // handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twin_engine::error::DriverError;
    use twin_engine::Error;

    #[test]
    fn an_error_line_prints_each_text_once() {
        let io = Error::io("m.twm", std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"));
        let e = anyhow::Error::new(io).context("--model = m.twm");
        assert_eq!(error_line(&e), "--model = m.twm: m.twm: no such file");
        let drv = Error::driver("cuda", "alloc", DriverError::Emulator("8 bytes overrun".into()));
        let e = anyhow::Error::new(drv).context("scoring");
        assert_eq!(error_line(&e), "scoring: cuda: alloc: 8 bytes overrun");
        // Distinct texts all print, outermost first.
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(error_line(&e), "outer: middle: inner");
    }
}
