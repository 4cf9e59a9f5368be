//! Records the git commit the binary is built from, for `shoal version`.
//! `SHOAL_BUILD_COMMIT` overrides it (a package built from a tarball has
//! no `.git`); without either the commit reads `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SHOAL_BUILD_COMMIT");
    let commit = std::env::var("SHOAL_BUILD_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SHOAL_BUILD_COMMIT={commit}");
}

/// The short hash of `HEAD`, with `-dirty` when tracked files differ from
/// it; reruns the build script when `HEAD`, the index or the branch moves.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    // `--git-path` finds each file where git keeps it: in a worktree, HEAD
    // and the index are the worktree's own, the branches are in the common
    // directory. Only files that exist are watched: cargo counts a missing
    // one as changed, and would rebuild the agent on every build.
    let mut watched = vec![
        "HEAD".to_string(),
        "index".to_string(),
        "packed-refs".to_string(),
    ];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for file in watched {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &file])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let hash = git(&["rev-parse", "--short=10", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}
