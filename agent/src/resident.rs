//! Keeps the agent's resident memory to what it actually uses.
//!
//! Most of an idle agent's resident set (`VmRSS`) is not heap but the
//! pages of its own executable and of libc: the kernel maps file pages
//! around each one touched ("fault-around", 64 KiB at a time), so a
//! program that touches a few functions here and there ends up with its
//! whole text resident, start-up code (argument parsing, config loading)
//! included, for as long as it runs. Two things undo that:
//!
//! - [`limit_malloc_arenas`], before the agent's runtime starts: glibc gives each
//!   thread that allocates its own arena (the agent's blocking threads for
//!   disk writes and system checks come and go); one arena is plenty for
//!   an agent whose work is one thread's.
//! - [`trim_code_pages`], once start-up is over (and once more a minute
//!   later): the executable's and the libraries' read-only mappings (code
//!   and constants) are unmapped from this process (`MADV_DONTNEED`; the
//!   pages stay in the page cache: nothing is read from disk again unless
//!   memory pressure evicted them meanwhile). What
//!   the agent then uses faults back in (with the kernel's fault-around,
//!   64 KiB at a time), so `VmRSS` drops to the code it really runs. Only
//!   clean mappings are touched: private, not writable, and without a
//!   single copy-on-write page, so every page is the file's own bytes and
//!   dropping it loses nothing (writable and relocated `RELRO` mappings
//!   are left alone). And only mappings of files that stay mapped for the
//!   process's whole life: the executable and the libraries it was linked
//!   against (libc, libm, libgcc_s, the dynamic loader). A file another
//!   thread maps for a moment (`/etc/ld.so.cache` while glibc loads an NSS
//!   module for a name lookup) could be unmapped between reading
//!   `/proc/self/smaps` and `madvise`, and its addresses reused by
//!   anonymous memory, which `MADV_DONTNEED` would zero.
//!
//! Neither changes what the agent does; the cost is a few hundred minor
//! page faults (well under a millisecond) after the trim.

/// Caps glibc's malloc arenas at one per process (no-op elsewhere).
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// When (after start-up) [`trim_code_pages`] runs: once the agent has
/// loaded its config, bound its sockets and made its first join attempt,
/// and again once joining (and whatever a new agent's neighbours ask of
/// it) is long over.
pub const TRIM_AT: [std::time::Duration; 2] = [
    std::time::Duration::from_secs(5),
    std::time::Duration::from_secs(60),
];

/// Trims code pages at [`TRIM_AT`] and returns freed heap pages to the
/// system each time. Spawned once by the daemon; ends after the last.
pub async fn trim_after_start_up() {
    let started = tokio::time::Instant::now();
    for at in TRIM_AT {
        tokio::time::sleep_until(started + at).await;
        let trimmed = trim_code_pages();
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe {
            libc::malloc_trim(0);
        }
        tracing::debug!(
            mappings = trimmed.mappings,
            bytes = trimmed.bytes,
            "dropped start-up code pages"
        );
    }
}

/// What [`trim_code_pages`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Code mappings trimmed.
    pub mappings: usize,
    /// Bytes of address space they span.
    pub bytes: usize,
}

/// Drops the resident pages of every clean read-only file mapping of this
/// process (see the module docs). Linux only; elsewhere a no-op.
pub fn trim_code_pages() -> Trimmed {
    let mut trimmed = Trimmed::default();
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return trimmed;
        };
        let exe = std::env::current_exe().ok();
        let lives_forever = |path: &str| {
            exe.as_deref().is_some_and(|exe| exe.as_os_str() == path) || linked_library(path)
        };
        for (start, end) in clean_file_mappings(&smaps, lives_forever) {
            let (addr, len) = (start as *mut libc::c_void, end - start);
            // SAFETY: the range is a whole private mapping of a file that
            // is not writable and has no anonymous (copy-on-write) page:
            // every page holds the file's contents, so MADV_DONTNEED only
            // drops page-table entries that refault to the same bytes (the
            // page cache keeps them). It cannot become writable meanwhile:
            // nothing in the agent calls mprotect.
            let ok = unsafe { libc::madvise(addr, len, libc::MADV_DONTNEED) == 0 };
            if ok {
                trimmed.mappings += 1;
                trimmed.bytes += len;
            }
        }
    }
    trimmed
}

/// The `(start, end)` of each mapping in `/proc/self/smaps` text that is
/// backed by a file, private, not writable (`r-xp`, `r--p`) and holds no
/// anonymous page (a relocated `RELRO` region does: it was written
/// before being made read-only, and is skipped).
/// Whether `path` is one of the libraries the agent is linked against,
/// which are mapped at start and never unmapped.
fn linked_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    ["libc.so", "libm.so", "libgcc_s.so", "ld-linux"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

pub fn clean_file_mappings(smaps: &str, keep: impl Fn(&str) -> bool) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(anonymous) = line.strip_prefix("Anonymous:") {
            let clean = anonymous.trim().strip_suffix("kB").map(str::trim) == Some("0");
            if let Some(range) = current.take()
                && clean
            {
                found.push(range);
            }
        } else if let Some(range) = mapping_header(line) {
            current = range.and_then(|(start, end, path)| keep(path).then_some((start, end)));
        }
    }
    found
}

/// A mapping's header line: `Some(Some(range))` for a candidate,
/// `Some(None)` for any other mapping, `None` for a field line.
fn mapping_header(line: &str) -> Option<Option<(usize, usize, &str)>> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    let (_offset, _device, inode) = (fields.next()?, fields.next()?, fields.next()?);
    let path = fields.next().unwrap_or("");
    let candidate =
        matches!(perms, "r-xp" | "r--p") && inode != "0" && path.starts_with('/') && end > start;
    Some(candidate.then_some((start, end, path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_chosen() {
        let smaps = "\
5576f174f000-5576f1a91000 r-xp 000d9000 fd:01 1234 /usr/bin/shoal
Rss:                2432 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
5576f1a91000-5576f1ab9000 r--p 003db000 fd:01 1234 /usr/bin/shoal
Rss:                 160 kB
Anonymous:           160 kB
5576f1ab9000-5576f1abc000 rw-p 00403000 fd:01 1234 /usr/bin/shoal
Anonymous:             0 kB
55772fd42000-55772fda6000 rw-p 00000000 00:00 0 [heap]
Anonymous:           368 kB
7f76830ab000-7f76830d1000 r--p 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f7683400000-7f7683401000 r-xp 00000000 00:00 0
Anonymous:             0 kB
7fff1b9f2000-7fff1b9f4000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7f7683500000-7f7683501000 rwxp 00000000 fd:01 7 /tmp/jit
Anonymous:             0 kB
7f7683600000-7f7683610000 r--p 00000000 fd:01 55 /etc/ld.so.cache
Anonymous:             0 kB
7f7683700000-7f7683710000 r-xp 00000000 fd:01 56 /usr/lib/x86_64-linux-gnu/libnss_dns.so.2
Anonymous:             0 kB
";
        assert_eq!(
            clean_file_mappings(smaps, |path| path == "/usr/bin/shoal"
                || linked_library(path)),
            vec![
                (0x5576f174f000, 0x5576f1a91000),
                (0x7f76830ab000, 0x7f76830d1000)
            ]
        );
    }

    #[test]
    fn trimming_our_own_code_leaves_us_running() {
        let trimmed = trim_code_pages();
        assert!(trimmed.mappings >= 1, "{trimmed:?}");
        // Code and constants fault back in after the trim.
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(!clean_file_mappings(&smaps, linked_library).is_empty());
    }
}
