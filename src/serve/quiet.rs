//! Work that must not slow down requests (loading, building and warming a new model version)
//! runs here: on a one-thread rayon pool of its own, at a lower CPU priority where the OS allows.
//!
//! Why: the CPU backend's ops are rayon-parallel, and scoring runs on the global pool. A swap
//! building its tables there would queue its chunks among the requests' and every request in
//! flight would wait for them (a latency spike at each swap). `ThreadPool::install` makes every
//! parallel op inside run on this pool instead, and the lower priority lets the scheduler favour
//! the scoring threads when both want the cores. The swap takes longer; requests do not notice.

/// Run `f` on a fresh one-thread pool at lower priority; on the calling thread if no pool can
/// be started.
pub(crate) fn run_quietly<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let pool =
        rayon::ThreadPoolBuilder::new().num_threads(1).thread_name(|_| "twin-swap".into()).start_handler(|_| lower_priority()).build();
    match pool {
        Ok(p) => p.install(f),
        Err(_) => f(),
    }
}

/// nice +10 for the calling thread (Linux priorities are per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes plain integers; `who` = 0 names the calling thread on Linux.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}
