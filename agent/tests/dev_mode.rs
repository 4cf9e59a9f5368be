//! `shoal agent --dev` runs with no config file, and `shoal members` shows
//! it as the one alive member. (Also makes `cargo test` build the `shoal`
//! binary that the cluster tests in `tests/` start.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn dev_agent_shows_one_alive_member_and_leaves_on_sigterm() {
    let bin = env!("CARGO_BIN_EXE_shoal");
    // Its own loopback address, so parallel test runs never collide.
    let ip = format!("127.201.{}.{}", std::process::id() % 250, 7);
    let http = format!("{ip}:18500");
    let mut agent = Command::new(bin)
        .args(["agent", "--dev", "--node", "dev-node"])
        .args(["--bind", &format!("{ip}:17946"), "--http-addr", &http])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent");

    let deadline = Instant::now() + Duration::from_secs(15);
    let table = loop {
        let output = Command::new(bin)
            .args(["members", "--http-addr", &http])
            .output()
            .unwrap();
        if output.status.success() {
            break String::from_utf8(output.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "agent never answered: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("Node") && lines[0].contains("Status"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("dev-node") && lines[1].contains("alive"),
        "{table}"
    );

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn version_and_help_work_without_an_agent() {
    let bin = env!("CARGO_BIN_EXE_shoal");
    let output = Command::new(bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("shoal "));
    let output = Command::new(bin)
        .args(["agent", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--config",
        "--dev",
        "--node",
        "--bind",
        "--advertise",
        "--http-addr",
        "--join",
        "--data-dir",
        "--tag",
        "--log-level",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from help");
    }
}
