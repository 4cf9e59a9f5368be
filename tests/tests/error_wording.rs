//! Error messages an operator meets first, on the real binary: each says
//! what was wrong, where, and what to do, once.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use shoal_tests::{Agent, http_json, run_agent_until_exit, shoal_bin, unique_loopback};

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `shoal agent` with its own addresses and `data_dir`, run through
/// `runner` (e.g. `setpriv` to drop root); waits for it to exit.
fn agent_with_data_dir(runner: &[&str], data_dir: &Path) -> Output {
    let ip = unique_loopback();
    let (program, prefix) = match runner.split_first() {
        Some((program, rest)) => (program.to_string(), rest.to_vec()),
        None => (shoal_bin().display().to_string(), Vec::new()),
    };
    let mut command = Command::new(program);
    command.args(prefix);
    if !runner.is_empty() {
        command.arg(shoal_bin());
    }
    command
        .args(["agent", "--node", "perm", "--dns-addr", "off"])
        .args(["--bind", &format!("{ip}:17946")])
        .args(["--http-addr", &format!("{ip}:18500")])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("RUST_LOG");
    command.output().expect("run shoal agent")
}

/// Start-up errors are printed once: one line of `output` names the
/// data dir.
fn assert_printed_once(output: &str) {
    let lines = output
        .lines()
        .filter(|line| line.contains("data_dir"))
        .count();
    assert_eq!(lines, 1, "printed once: {output}");
}

/// Runs the agent as `nobody`.
const AS_NOBODY: &[&str] = &[
    "/usr/bin/setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

/// A data dir the agent's user may not create: tests run as root, whom
/// file modes don't stop, so the agent runs as `nobody` (`setpriv`) under
/// a root-owned directory. The message says it is a permission problem,
/// which user, and what to do; once, without the doubled OS error.
#[test]
fn a_data_dir_without_permission_says_so_once_with_a_hint() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root and setpriv to run the agent as another user");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // tempdir is 0700: let `nobody` reach into it, but not write.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = root.path().join("data");
    let output = agent_with_data_dir(AS_NOBODY, &data_dir);
    let printed = text(&output);
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(
        printed
            .contains("permission denied: the agent runs as user id 65534, which cannot create it"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("chown 65534 {}", data_dir.display())),
        "{printed}"
    );
    assert_printed_once(&printed);
    assert!(!printed.contains("os error 13"), "{printed}");

    // An existing directory it can't write: the hint is to chown it.
    std::fs::create_dir(&data_dir).unwrap();
    let output = agent_with_data_dir(AS_NOBODY, &data_dir);
    let printed = text(&output);
    assert!(
        printed.contains(&format!(
            "which cannot write there (give that user the directory, e.g. `chown -R 65534 {}`",
            data_dir.display()
        )),
        "{printed}"
    );
    assert_printed_once(&printed);
}

/// A data dir that is a file (or under one) says so, not "File exists".
#[test]
fn a_data_dir_that_is_a_file_says_so_once() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("state");
    std::fs::write(&file, "not a directory").unwrap();
    for (data_dir, expected) in [
        (
            file.clone(),
            "is a file, not a directory: remove it or choose another --data-dir".to_string(),
        ),
        (
            file.join("sub"),
            format!("{} is a file, not a directory", file.display()),
        ),
    ] {
        let output = agent_with_data_dir(&[], &data_dir);
        let printed = text(&output);
        assert_eq!(output.status.code(), Some(1), "{printed}");
        assert!(printed.contains(&expected), "{printed}");
        assert!(!printed.contains("File exists"), "{printed}");
        assert_printed_once(&printed);
    }
}

/// `"Port": "9000"` is refused as a string (HTTP and config file), not as
/// "not a port"; a POST to a PUT route is a 405 with a JSON body;
/// `flags set --rollout 150` names `--rollout` and writes nothing.
#[test]
fn port_as_string_post_to_put_route_and_rollout_name_the_problem() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "words", &[]);
    let (status, body) = agent
        .register_service(&serde_json::json!({"Name": "web", "Port": "9000"}))
        .unwrap();
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("Port"), "{body}");
    assert!(
        message.contains("must be a number, not a string: write 9000 without quotes"),
        "{body}"
    );
    assert!(agent.get("/v1/agent/service/web").is_err());

    let (code, printed) = run_agent_until_exit(
        root.path(),
        "portfile",
        "[[services]]\nname = \"web\"\nport = \"9000\"\n",
    );
    assert_eq!(code, Some(2), "{printed}");
    assert!(
        printed.contains("config key `services[0].Port`: must be a number, not a string"),
        "{printed}"
    );

    for (method, path) in [
        ("POST", "/v1/agent/service/register"),
        ("POST", "/v1/kv/some/key"),
        ("POST", "/v1/agent/reload"),
    ] {
        let (status, body) = http_json(method, agent.http_addr(), path, Some(b"{}")).unwrap();
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|error| error.contains("use PUT") || error.contains("PUT")),
            "{method} {path}: {body}"
        );
    }

    let rollout = agent.cli(&["flags", "set", "f", "--enabled", "true", "--rollout", "150"]);
    let printed = text(&rollout);
    assert!(!rollout.status.success(), "{printed}");
    assert!(printed.contains("'--rollout <PERCENT>'"), "{printed}");
    assert!(printed.contains("from 0 to 100"), "{printed}");
    assert!(!printed.contains("rollout_percentage"), "{printed}");
    assert_eq!(agent.kv_get("_shoal/flags/f").unwrap(), None);
}

/// `kv.max_bytes = "1GB"` was silently 1 GiB: decimal-looking units are
/// refused as ambiguous, with the binary spelling to use; "1GiB" works.
#[test]
fn an_ambiguous_size_unit_is_refused_with_the_spelling_to_use() {
    let root = tempfile::tempdir().unwrap();
    let (code, printed) = run_agent_until_exit(root.path(), "gb", "[kv]\nmax_bytes = \"1GB\"\n");
    assert_eq!(code, Some(2), "{printed}");
    assert!(
        printed.contains("config key `kv.max_bytes`: `1GB` is ambiguous"),
        "{printed}"
    );
    assert!(printed.contains("write \"1GiB\""), "{printed}");

    let config = root.path().join("gib.toml");
    std::fs::write(&config, "[kv]\nmax_bytes = \"1GiB\"\n").unwrap();
    let agent = Agent::start_serving(
        root.path(),
        "gib",
        &["--config", &config.display().to_string()],
    );
    let stats = agent.get("/v1/agent/self").unwrap();
    assert_eq!(stats["Stats"]["kv"]["max_bytes"], 1u64 << 30, "{stats}");
    drop(agent);
    std::thread::sleep(Duration::from_millis(10));
}

/// An address without a port (`--join 127.0.0.1`, as Consul users write
/// it) gets the default gossip port, and the agent says so at start.
#[test]
fn an_address_without_a_port_gets_the_default_and_a_log_line() {
    let root = tempfile::tempdir().unwrap();
    let seed = unique_loopback();
    let agent = Agent::start_serving(root.path(), "bare", &["--join", &seed.to_string()]);
    shoal_tests::wait_for(Duration::from_secs(10), "the port-default line", || {
        let log = agent.log();
        log.contains(&format!("join `{seed}` has no port: using {seed}:7946"))
            .then_some(())
            .ok_or(log)
    });
}
