//! The README's quick start, run as written: every shell block marked
//! `<!-- quickstart: run -->` (or `run, check output`) is executed in
//! order, from the repository's root, with the real `shoal` binary first
//! on `PATH`; then the marked blocks of the guides in [`GUIDES`], against
//! the same cluster. An example that stops working fails here.
//!
//! What the test changes, and only that: `127.0.0.1` becomes a loopback
//! address of the test's own (so parallel tests never share ports), also
//! in the CLI's default `127.0.0.1:8500` (through `SHOAL_HTTP_ADDR`), and
//! `/tmp/shoal/` a temporary directory. Then:
//!
//! - a `shoal agent ...` line runs in the background until the test ends,
//!   and the next line waits until its `--http-addr` answers;
//! - a line whose comment says `(Ctrl-C to stop)` must still be running
//!   after 2 s, and is stopped;
//! - any other command must exit 0 within 20 s; in a `check output`
//!   block, the `# ...` lines under a command are its expected output
//!   (compared with runs of spaces folded to one; the command is re-run
//!   until they all appear, for at most 30 s, as a cluster converges).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::{http_json, shoal_bin, unique_loopback, wait_exit_or_kill, wait_for};

/// Guides whose marked blocks run after the README's, in this order
/// (they use the README's cluster, key and flag).
const GUIDES: &[&str] = &["docs/kv.md", "docs/flags.md"];

/// One command of a block, with the output lines it should print.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// A marked block: its steps, and whether their output is checked.
#[derive(Debug)]
struct Block {
    /// The file it is in (`README.md`, `docs/kv.md`).
    file: &'static str,
    line: usize,
    steps: Vec<Step>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The marked blocks of `readme` (the text of `file`), in order.
fn quickstart_blocks(file: &'static str, readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(marker) = lines[i]
            .trim()
            .strip_prefix("<!-- quickstart:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            i += 1;
            continue;
        };
        let check_output = marker.contains("check output");
        assert_eq!(
            lines.get(i + 1).map(|line| line.trim()),
            Some("```sh"),
            "{file} line {}: a quickstart marker must be followed by a ```sh block",
            i + 1
        );
        let start = i + 1;
        i += 2;
        let mut steps: Vec<Step> = Vec::new();
        let mut pending = String::new();
        while i < lines.len() && lines[i].trim() != "```" {
            let line = lines[i];
            i += 1;
            if let Some(continued) = line.strip_suffix('\\') {
                pending.push_str(continued);
                continue;
            }
            let line = format!("{pending}{line}");
            pending.clear();
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            if let Some(expected) = trimmed.strip_prefix('#') {
                if check_output && let Some(step) = steps.last_mut() {
                    step.expected.push(fold_spaces(expected));
                }
                continue;
            }
            // A multi-line quoted argument (the curl JSON body) continues
            // the previous command until its quotes balance.
            if let Some(step) = steps.last_mut()
                && without_comment(&step.command).matches('\'').count() % 2 == 1
            {
                step.command.push('\n');
                step.command.push_str(&line);
                continue;
            }
            steps.push(Step {
                command: line,
                expected: Vec::new(),
            });
        }
        i += 1;
        blocks.push(Block {
            file,
            line: start,
            steps,
        });
    }
    blocks
}

fn fold_spaces(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The command without its trailing `  # comment` (two spaces before the
/// `#`, as the README writes them).
fn without_comment(command: &str) -> &str {
    match command.find("  #") {
        Some(at) if command[..at].matches('\'').count().is_multiple_of(2) => {
            command[..at].trim_end()
        }
        _ => command.trim_end(),
    }
}

/// Background processes of the quick start, killed when the test ends.
struct Background(Vec<Child>);

impl Drop for Background {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `sh -c command` in `root`; `env` is `(PATH, SHOAL_HTTP_ADDR)`.
fn shell(command: &str, root: &Path, env: &(String, String)) -> Command {
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(command)
        .current_dir(root)
        .env("PATH", &env.0)
        .env("SHOAL_HTTP_ADDR", &env.1)
        .env_remove("SHOAL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    shell
}

/// Runs `command` to completion (at most 20 s): exit status and output.
fn run(command: &str, root: &Path, path_env: &(String, String)) -> (Option<i32>, String) {
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("out");
    let file = std::fs::File::create(&out).unwrap();
    let mut child = shell(command, root, path_env)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let code = wait_exit_or_kill(&mut child, Duration::from_secs(20));
    (code, std::fs::read_to_string(&out).unwrap_or_default())
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut blocks = quickstart_blocks("README.md", &readme);
    assert!(
        blocks.len() >= 6,
        "the README's quick start should have its cluster, members, register, lookup, KV and flags blocks marked; found {}",
        blocks.len()
    );
    for &guide in GUIDES {
        let text = std::fs::read_to_string(root.join(guide)).unwrap();
        let marked = quickstart_blocks(guide, &text);
        assert!(!marked.is_empty(), "{guide} has no marked block");
        blocks.extend(marked);
    }
    let scratch = tempfile::tempdir().unwrap();
    let ip = unique_loopback().to_string();
    let tmp = format!("{}/", scratch.path().display());
    std::fs::create_dir_all(scratch.path()).unwrap();
    let rewrite = |text: &str| text.replace("127.0.0.1", &ip).replace("/tmp/shoal/", &tmp);
    let bin_dir = shoal_bin().parent().unwrap().display().to_string();
    let path_env = (
        format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default()),
        rewrite("127.0.0.1:8500"),
    );
    let mut background = Background(Vec::new());
    let mut logs: Vec<PathBuf> = Vec::new();
    let show_logs = |logs: &[PathBuf]| {
        logs.iter()
            .map(|log| {
                format!(
                    "----- {} -----\n{}",
                    log.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .collect::<String>()
    };

    for block in &blocks {
        for step in &block.steps {
            let command = rewrite(without_comment(&step.command));
            let context = format!(
                "{} block at line {}: `{}`",
                block.file, block.line, step.command
            );
            if command.starts_with("shoal agent ") {
                let log = scratch.path().join(format!("agent-{}.log", logs.len()));
                let file = std::fs::File::create(&log).unwrap();
                let child = shell(&format!("exec {command}"), &root, &path_env)
                    .stdout(file.try_clone().unwrap())
                    .stderr(file)
                    .spawn()
                    .unwrap();
                background.0.push(child);
                logs.push(log);
                let http_addr = command
                    .split_whitespace()
                    .skip_while(|word| *word != "--http-addr")
                    .nth(1)
                    .unwrap_or_else(|| panic!("{context}: no --http-addr"))
                    .parse()
                    .unwrap();
                wait_for(Duration::from_secs(20), &context, || {
                    http_json("GET", http_addr, "/health/live", None).map(|_| ())
                });
            } else if step.command.contains("(Ctrl-C to stop)") {
                let mut child = shell(&command, &root, &path_env)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_secs(2));
                let exited = child.try_wait().unwrap();
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                assert!(
                    exited.is_none(),
                    "{context}: should follow until stopped, but exited {exited:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            } else {
                let expected: Vec<String> =
                    step.expected.iter().map(|line| rewrite(line)).collect();
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let (code, output) = run(&command, &root, &path_env);
                    let printed: Vec<String> = output.lines().map(fold_spaces).collect();
                    let missing: Vec<&String> = expected
                        .iter()
                        .filter(|line| !printed.contains(line))
                        .collect();
                    if code == Some(0) && missing.is_empty() {
                        break;
                    }
                    // A command that fails is retried only while it may
                    // still be waiting for the cluster (expected output).
                    if Instant::now() > deadline || (code != Some(0) && expected.is_empty()) {
                        panic!(
                            "{context}\nran `{command}`: exit {code:?}\nmissing lines: {missing:#?}\noutput:\n{output}\n{}",
                            show_logs(&logs)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
    assert!(
        !background.0.is_empty(),
        "the quick start starts no agent: {blocks:#?}"
    );
}
