//! The daemon's resident memory, kept small where it costs nothing (BENCHMARKS.md, figure 3 and "Soak"): glibc's
//! malloc arenas, and the code pages the kernel maps around the ones the daemon runs.

/// Tokio worker threads of `scanwatch run` (tokio's default is one per core).
pub const DAEMON_WORKERS: usize = 2;

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

/// Unmaps this process's executable code pages (`r-xp` mappings of files: the binary, libc, ld.so) with
/// `MADV_DONTNEED`; the code that runs afterwards faults back in from the page cache, so what stays resident is the
/// code of the daemon's steady state, not of its start (argument parsing, config validation, migrations, clap's
/// help). Called once, after the first cycle.
///
/// Why it matters: the kernel maps up to 16 cached pages around every page a process touches (fault-around), so by
/// the end of start-up nearly the whole text segment counts in the daemon's RSS — most of the idle figure
/// (BENCHMARKS.md, figure 3). Why it is safe: these mappings are private, read-only and executable, never written,
/// so each page is the file's page cache page; dropping the mapping loses nothing, and the page cache keeps the
/// pages (they are clean and shared with every other process of the same binary). Writable or relocated mappings
/// (`rw-p`, the `r--p` RELRO segment) are left alone. On error nothing changes; it only costs minor faults.
pub fn release_startup_code() {
    #[cfg(target_os = "linux")]
    {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
        for (start, end) in code_mappings(&maps) {
            // SAFETY: [start, end) is a whole mapping of this process, private, read-only and executable, backed
            // by a file (see `code_mappings`): MADV_DONTNEED only drops its page table entries, and the next access
            // maps the same file page again.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// The `r-xp` file-backed mappings of a `/proc/PID/maps` text, as (start, end).
fn code_mappings(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let path = fields.nth(3)?;
            if perms != "r-xp" || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
            (end > start).then_some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_executable_private_file_mappings_are_released() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 123 /usr/bin/scanwatch
55d0c0100000-55d0c0900000 r-xp 00100000 fd:01 123 /usr/bin/scanwatch
55d0c0900000-55d0c0a00000 r--p 00900000 fd:01 123 /usr/bin/scanwatch
55d0c0a00000-55d0c0a10000 rw-p 00a00000 fd:01 123 /usr/bin/scanwatch
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
7f0000002000-7f0000003000 r-xs 00000000 fd:01 9 /dev/shm/shared
7f0000004000-7f0000005000 rwxp 00000000 fd:01 9 /tmp/jit
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
7f1000000000-7f1000100000 r-xp 00028000 fd:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
";
        assert_eq!(code_mappings(maps), vec![(0x55d0c0100000, 0x55d0c0900000), (0x7f1000000000, 0x7f1000100000)],);
    }

    /// This very test's own code is released and runs on: the pages come back from the file.
    #[test]
    fn code_runs_on_after_its_pages_are_released() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(!code_mappings(&maps).is_empty(), "{maps}");
        release_startup_code();
        let again: Vec<u64> = (1..=1000u64).map(|i| i * i).collect();
        assert_eq!(again.iter().sum::<u64>(), 333_833_500);
    }
}
