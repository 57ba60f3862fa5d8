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
