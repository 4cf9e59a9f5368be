//! A handler script for watches and events that records what it was given:
//! it appends its stdin and an end marker to the file named by its first
//! argument, and [`recorded`] reads the JSON documents back.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A record's end in a recorder's output file.
pub const RECORD_END: &str = "--end--";

/// Writes the recorder to `dir/record.sh` and returns its path.
pub fn recorder(dir: &Path) -> PathBuf {
    let path = dir.join("record.sh");
    std::fs::write(
        &path,
        format!("#!/bin/sh\ncat >> \"$1\"\necho {RECORD_END} >> \"$1\"\n"),
    )
    .unwrap();
    make_executable(&path);
    path
}

pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The JSON documents recorded in `file` so far (none when it is absent).
pub fn recorded(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.split(RECORD_END)
        .map(str::trim)
        .filter(|chunk| !chunk.is_empty())
        .map(|chunk| serde_json::from_str(chunk).unwrap_or_else(|e| panic!("{chunk}: {e}")))
        .collect()
}
