//! The daemon's resident memory, kept small where it costs nothing (BENCHMARKS.md, figure 3 and "Soak"): glibc's
//! malloc arenas, and the code pages the kernel maps around the ones the daemon runs.

/// At most two malloc arenas (`M_ARENA_MAX`), instead of glibc's eight per core: every thread that allocates
/// (tokio's workers and blocking pool, one thread per SQLite connection) would otherwise get its own arena, each
/// keeping freed memory it cannot hand to the others. The daemon allocates little and rarely at once, so the
/// lock two arenas share is never contended. `MALLOC_ARENA_MAX` in the environment still wins.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before the runtime starts any thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
