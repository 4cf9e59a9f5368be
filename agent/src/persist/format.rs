//! The data directory's format version (the `FORMAT` file) and the
//! migrations between versions.
//!
//! Start-up checks the format before anything else in the directory is
//! read or written:
//!
//! - no `FORMAT` file: a directory of 0.1.0 (which wrote none), or a new
//!   one. 0.1.0's layout is format 1, so it is migrated to this build's
//!   format like any older one; a new (empty) one is simply marked;
//! - an older format: migrated in place. Every file is first copied to
//!   `.migration/backup/` (and `.migration/backup-complete` written once the
//!   copy is durable); then the steps run, `FORMAT` is written, and the
//!   backup is removed. A start that finds `.migration/` (a migration was
//!   interrupted) restores the backup if it was complete (the steps may have
//!   run halfway) or drops the partial backup (nothing was changed yet),
//!   and then migrates again from the start: it resumes by rolling back;
//! - a newer format: the agent refuses to start, naming both versions,
//!   and changes nothing (an older binary can't know what a newer format
//!   means).
//!
//! A change to any file of the data dir or table of the KV database that
//! an older agent can't read bumps [`super::DATA_DIR_FORMAT`] and adds a
//! step to `steps` (CONTRIBUTING.md).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{DataDirError, write_atomic};

/// The file that holds the format version, one decimal number.
pub const FORMAT_FILE: &str = "FORMAT";
/// The journal of a migration under way: the backup and its markers.
const MIGRATION_DIR: &str = ".migration";
const BACKUP_DIR: &str = "backup";
const BACKUP_COMPLETE: &str = "backup-complete";
/// The format of a directory without a `FORMAT` file (0.1.0's).
pub const UNMARKED_FORMAT: u32 = 1;
/// Files that are not data: never backed up or restored.
const NOT_DATA: [&str; 2] = ["LOCK", MIGRATION_DIR];

/// Test-only: raises this build's format to 2, with a step from 1 that
/// the tests can observe (files `format2-step-a`, `format2-step-b`). Not
/// documented for users: a real format 2 replaces it.
const TEST_FORMAT_ENV: &str = "SHOAL_TEST_DATA_FORMAT";
/// Test-only: milliseconds to sleep in the middle of a migration, so that a
/// test can kill the agent there.
const TEST_PAUSE_ENV: &str = "SHOAL_TEST_MIGRATION_PAUSE_MS";

/// What start-up found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The directory already had this build's format.
    Current,
    /// A new directory, marked with this build's format.
    Marked,
    /// Migrated from `from`; `rolled_back` when an interrupted migration
    /// was undone first.
    Migrated { from: u32, rolled_back: bool },
}

/// The format this build reads and writes (see `TEST_FORMAT_ENV`).
pub fn current() -> u32 {
    match std::env::var(TEST_FORMAT_ENV).ok().as_deref() {
        Some("2") => 2,
        _ => super::DATA_DIR_FORMAT,
    }
}

/// Checks `dir`'s format and migrates it to `target` (see the module docs).
/// Call with the directory locked.
pub fn prepare(dir: &Path, target: u32) -> Result<Outcome, DataDirError> {
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |error| DataDirError::Io { path, error }
    };
    let found = read_format(dir)?;
    if let Some(found) = found
        && found > target
    {
        // Before anything else: an interrupted migration of a newer agent
        // is its to finish, not ours to roll back.
        return Err(DataDirError::NewerFormat {
            path: dir.to_path_buf(),
            found,
            supported: target,
        });
    }
    let journal = dir.join(MIGRATION_DIR);
    let mut rolled_back = false;
    if journal.exists() {
        if migration_finished(dir, &journal)? {
            // `FORMAT` is the migration's last change: only the clean-up
            // of its journal was cut short.
            drop_journal(&journal).map_err(io_at(&journal))?;
        } else {
            roll_back(dir).map_err(io_at(&journal))?;
            rolled_back = true;
        }
    }
    // Read again: a rollback restores the earlier `FORMAT` (or none).
    let found = read_format(dir)?;
    if found == Some(target) {
        return Ok(Outcome::Current);
    }
    if found.is_none() && !holds_data(dir).map_err(io_at(dir))? {
        write_atomic(dir, FORMAT_FILE, format!("{target}\n").as_bytes())
            .map_err(io_at(&dir.join(FORMAT_FILE)))?;
        return Ok(Outcome::Marked);
    }
    let from = found.unwrap_or(UNMARKED_FORMAT);
    migrate(dir, from, target).map_err(io_at(dir))?;
    Ok(Outcome::Migrated { from, rolled_back })
}

/// Whether the migration whose journal is in `journal` got as far as
/// writing `FORMAT` (its last change): the format now is past the one its
/// complete backup was taken from.
fn migration_finished(dir: &Path, journal: &Path) -> Result<bool, DataDirError> {
    let Ok(text) = fs::read_to_string(journal.join(BACKUP_COMPLETE)) else {
        return Ok(false);
    };
    let Ok(from) = text.trim().parse::<u32>() else {
        return Ok(false);
    };
    Ok(read_format(dir)?.is_some_and(|now| now > from))
}

fn read_format(dir: &Path) -> Result<Option<u32>, DataDirError> {
    let file = dir.join(FORMAT_FILE);
    match fs::read_to_string(&file) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(format) if format >= 1 => Ok(Some(format)),
            _ => Err(DataDirError::Corrupt {
                path: file,
                content: text.chars().take(40).collect(),
            }),
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(DataDirError::Io { path: file, error }),
    }
}

/// The data entries of `dir` (everything but the lock and the journal).
fn data_entries(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !NOT_DATA.iter().any(|skip| name == *skip) {
            entries.push(entry.path());
        }
    }
    entries.sort();
    Ok(entries)
}

fn holds_data(dir: &Path) -> io::Result<bool> {
    Ok(!data_entries(dir)?.is_empty())
}

fn migrate(dir: &Path, from: u32, to: u32) -> io::Result<()> {
    if (from..to).all(|step| steps(step).is_none()) {
        // Nothing on disk changes but the marker: no backup needed (it
        // would need as much free space as the data).
        write_atomic(dir, FORMAT_FILE, format!("{to}\n").as_bytes())?;
        tracing::info!(data_dir = %dir.display(), from, to, "data dir marked with its format");
        return Ok(());
    }
    let journal = dir.join(MIGRATION_DIR);
    let backup = journal.join(BACKUP_DIR);
    fs::create_dir_all(&backup)?;
    for entry in data_entries(dir)? {
        copy_tree(
            &entry,
            &backup.join(entry.file_name().expect("a named entry")),
        )?;
    }
    sync_tree(&backup)?;
    write_atomic(&journal, BACKUP_COMPLETE, format!("{from}\n").as_bytes())?;
    tracing::info!(
        data_dir = %dir.display(),
        from, to,
        "migrating the data dir; a backup is in {}", backup.display()
    );
    for step in from..to {
        if let Some(run) = steps(step) {
            run(dir)?;
        }
    }
    // The marker itself is the last change: verify it reads back before
    // the backup goes.
    write_atomic(dir, FORMAT_FILE, format!("{to}\n").as_bytes())?;
    let written = fs::read_to_string(dir.join(FORMAT_FILE))?;
    if written.trim() != to.to_string() {
        return Err(io::Error::other(format!(
            "{FORMAT_FILE} reads {written:?} after writing {to}"
        )));
    }
    drop_journal(&journal)?;
    tracing::info!(data_dir = %dir.display(), from, to, "data dir migrated");
    Ok(())
}

/// Removes the migration journal so that a crash at any point leaves no
/// complete-looking backup behind: the completion mark goes first (and is
/// made durable), then the rest. A partial backup without its mark is only
/// ever dropped, never restored.
fn drop_journal(journal: &Path) -> io::Result<()> {
    match fs::remove_file(journal.join(BACKUP_COMPLETE)) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    File::open(journal)?.sync_all()?;
    fs::remove_dir_all(journal)?;
    if let Some(dir) = journal.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Undoes an interrupted migration: restores a complete backup, or drops a
/// partial one (the data was not touched before the backup completed).
fn roll_back(dir: &Path) -> io::Result<()> {
    let journal = dir.join(MIGRATION_DIR);
    let backup = journal.join(BACKUP_DIR);
    if journal.join(BACKUP_COMPLETE).exists() {
        tracing::warn!(
            data_dir = %dir.display(),
            "an interrupted data dir migration is rolled back from its backup"
        );
        for entry in data_entries(dir)? {
            remove_tree(&entry)?;
        }
        for entry in fs::read_dir(&backup)? {
            let entry = entry?.path();
            copy_tree(&entry, &dir.join(entry.file_name().expect("a named entry")))?;
        }
        sync_tree(dir)?;
    } else {
        tracing::warn!(
            data_dir = %dir.display(),
            "a data dir migration was interrupted before its backup was complete; nothing was changed"
        );
    }
    drop_journal(&journal)
}

/// The step from `format` to `format + 1`, if it changes anything on disk.
fn steps(format: u32) -> Option<fn(&Path) -> io::Result<()>> {
    match format {
        1 if current() == 2 => Some(test_step_to_2),
        _ => None,
    }
}

/// The test-only step 1 → 2: two changes with a pause between them, so a
/// kill in the middle leaves a half-migrated directory.
fn test_step_to_2(dir: &Path) -> io::Result<()> {
    write_atomic(dir, "format2-step-a", b"a\n")?;
    if let Some(pause) = std::env::var(TEST_PAUSE_ENV)
        .ok()
        .and_then(|ms| ms.parse().ok())
    {
        tracing::info!(
            pause_ms = pause,
            "test: pausing in the middle of a migration"
        );
        std::thread::sleep(Duration::from_millis(pause));
    }
    write_atomic(dir, "format2-step-b", b"b\n")?;
    fs::remove_file(dir.join("format2-step-a"))
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    if from.is_dir() {
        fs::create_dir_all(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?.path();
            copy_tree(&entry, &to.join(entry.file_name().expect("a named entry")))?;
        }
        Ok(())
    } else {
        fs::copy(from, to).map(|_| ())
    }
}

fn remove_tree(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// fsyncs every file under `path` and the directories themselves.
fn sync_tree(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        for entry in fs::read_dir(path)? {
            sync_tree(&entry?.path())?;
        }
    }
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    fs::read(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_new_dir_is_marked_and_an_unmarked_one_is_migrated_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(prepare(dir.path(), 1).unwrap(), Outcome::Marked);
        assert_eq!(prepare(dir.path(), 1).unwrap(), Outcome::Current);

        let old = tempfile::tempdir().unwrap();
        fs::write(old.path().join("generation"), "5\n").unwrap();
        fs::write(old.path().join("LOCK"), "").unwrap();
        assert_eq!(
            prepare(old.path(), 1).unwrap(),
            Outcome::Migrated {
                from: 1,
                rolled_back: false
            }
        );
        assert_eq!(
            fs::read_to_string(old.path().join(FORMAT_FILE)).unwrap(),
            "1\n"
        );
        assert_eq!(
            fs::read_to_string(old.path().join("generation")).unwrap(),
            "5\n"
        );
        assert!(!old.path().join(MIGRATION_DIR).exists(), "backup removed");
    }

    #[test]
    fn a_newer_format_is_refused_naming_both_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FORMAT_FILE), "7\n").unwrap();
        fs::write(dir.path().join("generation"), "5\n").unwrap();
        fs::create_dir(dir.path().join(MIGRATION_DIR)).unwrap();
        let before = listing(dir.path());
        let error = prepare(dir.path(), 1).unwrap_err().to_string();
        assert!(
            error.contains("format 7") && error.contains("format 1"),
            "{error}"
        );
        assert_eq!(listing(dir.path()), before);
        assert!(dir.path().join(MIGRATION_DIR).exists());
    }

    #[test]
    fn an_interrupted_migration_is_rolled_back_then_run_again() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("generation"), "5\n").unwrap();
        // As a kill after the backup and half the steps leaves it.
        let backup = dir.path().join(MIGRATION_DIR).join(BACKUP_DIR);
        fs::create_dir_all(&backup).unwrap();
        fs::write(backup.join("generation"), "5\n").unwrap();
        fs::write(dir.path().join(MIGRATION_DIR).join(BACKUP_COMPLETE), "1\n").unwrap();
        fs::write(dir.path().join("generation"), "half-migrated").unwrap();
        fs::write(dir.path().join("format2-step-a"), "a\n").unwrap();
        assert_eq!(
            prepare(dir.path(), 1).unwrap(),
            Outcome::Migrated {
                from: 1,
                rolled_back: true
            }
        );
        assert_eq!(
            listing(dir.path()),
            vec![
                ("FORMAT".to_string(), b"1\n".to_vec()),
                ("generation".to_string(), b"5\n".to_vec()),
            ]
        );
        // A backup cut short: the data was never touched, the copy goes.
        fs::create_dir_all(&backup).unwrap();
        fs::write(backup.join("gener"), "").unwrap();
        assert_eq!(prepare(dir.path(), 1).unwrap(), Outcome::Current);
        assert!(!dir.path().join(MIGRATION_DIR).exists());
    }

    /// A kill while the journal of a finished migration is removed (the
    /// backup half gone, its completion mark still there) keeps the
    /// migrated data: `FORMAT`, written last, says the migration is done.
    #[test]
    fn a_clean_up_cut_short_keeps_the_migrated_data() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FORMAT_FILE), "1\n").unwrap();
        fs::write(dir.path().join("generation"), "migrated\n").unwrap();
        let backup = dir.path().join(MIGRATION_DIR).join(BACKUP_DIR);
        fs::create_dir_all(&backup).unwrap();
        fs::write(backup.join("gener"), "").unwrap();
        fs::write(dir.path().join(MIGRATION_DIR).join(BACKUP_COMPLETE), "0\n").unwrap();
        assert_eq!(prepare(dir.path(), 1).unwrap(), Outcome::Current);
        assert_eq!(
            listing(dir.path()),
            vec![
                ("FORMAT".to_string(), b"1\n".to_vec()),
                ("generation".to_string(), b"migrated\n".to_vec()),
            ]
        );
        assert!(!dir.path().join(MIGRATION_DIR).exists());
    }

    #[test]
    fn a_corrupt_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FORMAT_FILE), "two\n").unwrap();
        let error = prepare(dir.path(), 1).unwrap_err().to_string();
        assert!(error.contains("FORMAT") && error.contains("two"), "{error}");
    }
}
