//! The previous release's `shoal` binary, for the tests that run it beside
//! this build (tests/tests/rolling_upgrade.rs).
//!
//! The commit is named in `tests/compat/PREVIOUS`. Its tree is exported
//! with `git archive` into `target/compat/<commit>/src` and built there with
//! `cargo build -p shoal-agent --bin shoal --locked`, into a target dir of
//! its own (`target/compat/build`, shared by every previous commit so that
//! compiled dependencies carry over). The first build seeds that dir with
//! this tree's compiled registry dependencies (`target/debug`), which the
//! old tree mostly shares: it compiles only what differs. The binary is
//! kept as `target/compat/<commit>/shoal`: later runs cost nothing.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository's root (the workspace).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The workspace's target dir, as cargo resolves it for this test.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .to_path_buf()
}

/// The commit of the previous release (`tests/compat/PREVIOUS`).
pub fn previous_commit() -> String {
    let file = repo_root().join("tests/compat/PREVIOUS");
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let commit = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .unwrap_or_else(|| panic!("{} names no commit", file.display()))
        .to_string();
    assert!(
        commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{}: {commit:?} is not a commit hash",
        file.display()
    );
    commit
}

/// Where previous releases are built and kept (`target/compat`).
pub fn compat_dir() -> PathBuf {
    target_dir().join("compat")
}

/// The previous release's `shoal`, built on first use (see the module docs).
pub fn previous_release() -> PathBuf {
    let commit = previous_commit();
    let compat = compat_dir();
    let bin = compat.join(&commit).join("shoal");
    if bin.exists() {
        return bin;
    }
    fs::create_dir_all(&compat).expect("create target/compat");
    // Test processes may ask at once: one builds, the others wait.
    let lock = fs::File::create(compat.join("LOCK")).expect("create target/compat/LOCK");
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if bin.exists() {
        return bin;
    }
    let started = std::time::Instant::now();
    let source = compat.join(&commit).join("src");
    export_tree(&commit, &source);
    let build_dir = compat.join("build");
    seed_dependencies(&target_dir().join("debug"), &build_dir.join("debug"));
    eprintln!(
        "building the previous release {commit} in {} (once; cached as {})",
        source.display(),
        bin.display()
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", "shoal-agent", "--bin", "shoal", "--locked"])
        .current_dir(&source)
        .env("CARGO_TARGET_DIR", &build_dir)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .expect("run cargo build for the previous release");
    assert!(status.success(), "building {commit} failed");
    fs::copy(build_dir.join("debug/shoal"), &bin).expect("keep the previous release's binary");
    eprintln!(
        "built the previous release {commit} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    bin
}

/// `git archive <commit>` of the repository, unpacked into `into`.
fn export_tree(commit: &str, into: &Path) {
    if into.join("Cargo.toml").exists() {
        return;
    }
    let root = repo_root();
    let has_commit = Command::new("git")
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .current_dir(&root)
        .status()
        .is_ok_and(|s| s.success());
    if !has_commit {
        // A shallow clone (CI) lacks it: fetch that one commit.
        let fetched = Command::new("git")
            .args(["fetch", "--depth=1", "origin", commit])
            .current_dir(&root)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            fetched,
            "commit {commit} (tests/compat/PREVIOUS) is not in this clone and could not be \
             fetched: clone with history (git fetch --unshallow)"
        );
    }
    let partial = into.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).expect("create the export dir");
    let mut archive = Command::new("git")
        .args(["archive", "--format=tar", commit])
        .current_dir(&root)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run git archive");
    let unpacked = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(&partial)
        .stdin(archive.stdout.take().expect("git archive's output"))
        .status()
        .expect("run tar");
    let archived = archive.wait().expect("wait for git archive");
    assert!(
        archived.success() && unpacked.success(),
        "exporting {commit} failed"
    );
    let _ = fs::remove_dir_all(into);
    fs::rename(&partial, into).expect("move the exported tree in place");
}

/// Copies this tree's compiled dependencies (not the workspace's own
/// crates, nor test executables) into the previous release's target dir,
/// once: cargo reuses those whose versions and features match.
fn seed_dependencies(ours: &Path, theirs: &Path) {
    if theirs.exists() || !ours.join("deps").exists() {
        return;
    }
    let own_crate = |name: &str| name.starts_with("shoal") || name.starts_with("libshoal");
    let copy_dir = |dir: &str, keep: &dyn Fn(&Path) -> bool| {
        let Ok(entries) = fs::read_dir(ours.join(dir)) else {
            return;
        };
        fs::create_dir_all(theirs.join(dir)).expect("create the seeded dir");
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if own_crate(&name) || !keep(&path) {
                continue;
            }
            let _ = Command::new("cp")
                .args(["-a", "-r"])
                .arg(&path)
                .arg(theirs.join(dir))
                .status();
        }
    };
    // Libraries (.rlib, .rmeta, proc-macro .so) and their dep-info; not
    // test executables (no extension).
    copy_dir("deps", &|path| path.extension().is_some());
    copy_dir("build", &|_| true);
    copy_dir(".fingerprint", &|_| true);
}
