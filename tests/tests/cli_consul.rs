//! Consul's CLI habits on the real `shoal` binary against real agents:
//! global flags anywhere, `CONSUL_HTTP_*` fallbacks, single-dash long
//! options, `kv put @file` and `-`, `kv get -recurse|-keys`, `kv export`
//! and `kv import`, `catalog`, `services register|deregister`,
//! `members -status -detailed`, maintenance in `shoal service`, reload
//! counts and `shoal validate`.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use shoal_tests::{Agent, AgentOptions, Cluster, shoal_bin, wait_for};

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `shoal args` with no `SHOAL_*`/`CONSUL_*` variables but `env`.
fn shoal(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(shoal_bin());
    command.args(args);
    for name in [
        "SHOAL_HTTP_ADDR",
        "SHOAL_HTTP_TOKEN",
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("run shoal")
}

fn ok(output: Output, what: &str) -> String {
    assert!(output.status.success(), "{what}: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `--http-addr` and `--token` go before or after the subcommand, are
/// listed in a subcommand's --help, and fall back to `CONSUL_HTTP_ADDR`
/// and `CONSUL_HTTP_TOKEN` after the `SHOAL_*` variables; long options
/// also take Consul's single dash.
#[test]
fn global_flags_go_anywhere_and_consul_variables_are_fallbacks() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "tok", &["--acl-token", "s3cret"]);
    let addr = agent.http_addr().to_string();

    // After the subcommand (refused by clap before).
    ok(
        shoal(
            &[
                "kv",
                "put",
                "--token",
                "s3cret",
                "--http-addr",
                &addr,
                "a",
                "1",
            ],
            &[],
        ),
        "kv put --token after the subcommand",
    );
    // Before it, as always.
    ok(
        shoal(
            &[
                "--http-addr",
                &addr,
                "--token",
                "s3cret",
                "kv",
                "put",
                "b",
                "2",
            ],
            &[],
        ),
        "kv put --token before the subcommand",
    );
    // No token: refused by the agent, so the token above did count.
    let refused = shoal(&["kv", "put", "--http-addr", &addr, "c", "3"], &[]);
    assert!(!refused.status.success(), "{}", text(&refused));

    // Listed in the subcommand's help.
    let help = ok(shoal(&["kv", "put", "--help"], &[]), "kv put --help");
    assert!(help.contains("--token <TOKEN>"), "{help}");
    assert!(help.contains("--http-addr <IP:PORT>"), "{help}");

    // CONSUL_* as fallbacks, SHOAL_* first.
    ok(
        shoal(
            &["kv", "put", "d", "4"],
            &[
                ("CONSUL_HTTP_ADDR", &format!("http://{addr}")),
                ("CONSUL_HTTP_TOKEN", "s3cret"),
            ],
        ),
        "CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN",
    );
    ok(
        shoal(
            &["kv", "put", "e", "5"],
            &[
                ("SHOAL_HTTP_ADDR", addr.as_str()),
                ("CONSUL_HTTP_ADDR", "127.0.0.1:1"),
                ("SHOAL_HTTP_TOKEN", "s3cret"),
                ("CONSUL_HTTP_TOKEN", "wrong"),
            ],
        ),
        "SHOAL_* before CONSUL_*",
    );

    // Consul's single-dash spelling, `-name value` and `-name=value`.
    let recurse = ok(
        shoal(
            &[
                "kv",
                "get",
                "-recurse",
                &format!("-http-addr={addr}"),
                "-token",
                "s3cret",
            ],
            &[],
        ),
        "kv get -recurse -http-addr= -token",
    );
    for line in ["a:1", "b:2", "d:4", "e:5"] {
        assert!(recurse.lines().any(|l| l == line), "{line} in {recurse}");
    }
}

/// `kv put KEY @file` stores the file's contents, `-` reads standard
/// input, `@` alone or a missing file is an error that writes nothing;
/// `kv get -recurse` prints `key:value`, `-keys` rolls up at
/// `-separator`; `kv export` prints Consul's JSON and `kv import` takes it
/// back (under `--prefix`), and a bad document imports nothing.
#[test]
fn kv_put_from_files_and_stdin_get_recurse_keys_export_import() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "kv", &[]);
    let file = root.path().join("value.txt");
    std::fs::write(&file, "from a file\n").unwrap();
    let at_file = format!("@{}", file.display());

    ok(agent.cli(&["kv", "put", "big/v2", &at_file]), "put @file");
    assert_eq!(
        agent.kv_get("big/v2").unwrap().as_deref(),
        Some("from a file\n")
    );

    let mut child = Command::new(shoal_bin())
        .args(["kv", "put", "big/stdin", "-"])
        .env("SHOAL_HTTP_ADDR", agent.http_addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(agent.kv_get("big/stdin").unwrap().as_deref(), Some("piped"));

    let bare = agent.cli(&["kv", "put", "big/bare", "@"]);
    assert!(!bare.status.success());
    assert!(text(&bare).contains("`@` names no file"), "{}", text(&bare));
    let missing = agent.cli(&["kv", "put", "big/missing", "@/nonexistent/file"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("cannot read the value from file `/nonexistent/file`"),
        "{}",
        text(&missing)
    );
    assert_eq!(agent.kv_get("big/bare").unwrap(), None);
    assert_eq!(agent.kv_get("big/missing").unwrap(), None);

    ok(
        agent.cli(&["kv", "put", "big/deep/er", "x", "--flags", "7"]),
        "put deep",
    );
    let recurse = ok(
        agent.cli(&["kv", "get", "big/", "--recurse"]),
        "get --recurse",
    );
    assert_eq!(
        recurse, "big/deep/er:x\nbig/stdin:piped\nbig/v2:from a file\n\n",
        "{recurse}"
    );
    let keys = ok(agent.cli(&["kv", "get", "-keys", "big/"]), "get -keys");
    assert_eq!(keys, "big/deep/\nbig/stdin\nbig/v2\n");
    let all = ok(
        agent.cli(&["kv", "get", "-keys", "-separator=", "big/"]),
        "-separator=",
    );
    assert_eq!(all, "big/deep/er\nbig/stdin\nbig/v2\n");

    let exported = ok(agent.cli(&["kv", "export", "big/"]), "export");
    let json: serde_json::Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(
        json[0],
        serde_json::json!({"key": "big/deep/er", "flags": 7, "value": "eA=="}),
        "{exported}"
    );
    let dump = root.path().join("dump.json");
    std::fs::write(&dump, &exported).unwrap();
    let imported = ok(
        agent.cli(&[
            "kv",
            "import",
            "--prefix",
            "copy/",
            &format!("@{}", dump.display()),
        ]),
        "import",
    );
    assert!(imported.contains("Imported: copy/big/v2"), "{imported}");
    assert_eq!(
        ok(agent.cli(&["kv", "get", "-recurse", "copy/"]), "get copy"),
        recurse.replace("big/", "copy/big/")
    );
    let detailed = agent.get("/v1/kv/copy/big/deep/er").unwrap();
    assert_eq!(detailed[0]["Flags"], 7);

    // A document with one bad value imports nothing.
    let bad =
        r#"[{"key":"bad/one","flags":0,"value":"b25l"},{"key":"bad/two","flags":0,"value":"%%%"}]"#;
    let refused = agent.cli(&["kv", "import", bad]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("entry 1 (key `bad/two`): `value` is not base64"),
        "{}",
        text(&refused)
    );
    assert_eq!(agent.kv_get("bad/one").unwrap(), None);
}

/// `catalog nodes|services|datacenters`, `services register|deregister`,
/// maintenance shown as such, `members -status -detailed`.
#[test]
fn catalog_services_aliases_maintenance_and_members() {
    let cluster = Cluster::start(2);
    cluster.wait_all_alive(Duration::from_secs(30));
    let agent = &cluster.agents[0];
    let file = cluster.root.path().join("web.json");
    std::fs::write(
        &file,
        r#"{"Name": "web", "ID": "web-1", "Port": 8080, "Tags": ["v1"],
            "Check": {"TTL": "60s", "Status": "passing"}}"#,
    )
    .unwrap();
    let registered = ok(
        agent.cli(&["services", "register", &file.display().to_string()]),
        "services register",
    );
    assert!(
        registered.contains("Registered service: web-1"),
        "{registered}"
    );

    let nodes = ok(agent.cli(&["catalog", "nodes"]), "catalog nodes");
    assert!(nodes.starts_with("Node"), "{nodes}");
    for node in ["node-0", "node-1"] {
        let row = nodes
            .lines()
            .find(|line| line.starts_with(node))
            .unwrap_or_else(|| panic!("{node} in {nodes}"));
        assert!(row.ends_with("dc1"), "{row}");
    }
    wait_for(Duration::from_secs(10), "web in the catalog", || {
        let services = ok(
            agent.cli(&["catalog", "services", "--tags"]),
            "catalog services",
        );
        services
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>() == ["web", "v1"])
            .then_some(())
            .ok_or(services)
    });
    assert_eq!(
        ok(
            agent.cli(&["catalog", "datacenters"]),
            "catalog datacenters"
        ),
        "dc1\n"
    );

    let status = |agent: &Agent| {
        let table = ok(agent.cli(&["service", "web"]), "service web");
        table
            .lines()
            .find(|line| line.contains("web-1"))
            .map(|row| {
                row.split_whitespace()
                    .nth(3)
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default()
    };
    assert_eq!(status(agent), "passing");
    ok(
        agent.cli(&["maint", "--enable", "--service", "web-1"]),
        "maint",
    );
    assert_eq!(status(agent), "maintenance");
    ok(
        agent.cli(&["maint", "--disable", "--service", "web-1"]),
        "maint off",
    );
    assert_eq!(status(agent), "passing");

    let deregistered = ok(
        agent.cli(&["services", "deregister", "web-1"]),
        "services deregister",
    );
    assert!(
        deregistered.contains("Deregistered service: web-1"),
        "{deregistered}"
    );
    assert!(agent.get("/v1/agent/service/web-1").is_err());

    let detailed = ok(
        agent.cli(&["members", "-detailed", "-status", "ali.e"]),
        "members",
    );
    let header: Vec<&str> = detailed
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "Node",
            "Address",
            "Status",
            "Generation",
            "Protocol",
            "Tags"
        ]
    );
    assert_eq!(detailed.lines().count(), 3, "{detailed}");
    assert!(
        detailed.contains("shoal_node_id=") || detailed.contains("id="),
        "{detailed}"
    );
    let none = ok(
        agent.cli(&["members", "-status", "failed"]),
        "members -status failed",
    );
    assert_eq!(none.lines().count(), 1, "{none}");
}

/// `shoal reload` counts every check, a service's own included (it
/// printed "0 checks" for a service with a check).
#[test]
fn reload_counts_the_checks_of_services() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("agent.toml");
    let options = AgentOptions::with_config_file(
        &config,
        "[[services]]\nname = \"api\"\nport = 9000\n[[services.checks]]\nttl = \"30s\"\n\
         [[services.checks]]\ntcp = \"127.0.0.1:9\"\ninterval = \"10s\"\n\
         [[checks]]\nid = \"mem\"\nmemory = { warning = 99, critical = 100 }\ninterval = \"10s\"\n",
        &[],
    );
    let agent = Agent::start(
        root.path(),
        AgentOptions {
            name: "rl".into(),
            ..options
        },
    );
    agent.wait_serving();
    let reloaded = ok(agent.cli(&["reload"]), "reload");
    assert!(
        reloaded.starts_with("Configuration reloaded: 1 services, 3 checks,"),
        "{reloaded}"
    );
}

/// `shoal validate FILE...`: exit 0 and "Configuration is valid!" when
/// every file loads; otherwise exit 1 and each bad file with its key.
#[test]
fn validate_names_each_bad_file_and_key() {
    let root = tempfile::tempdir().unwrap();
    let good = root.path().join("good.toml");
    std::fs::write(
        &good,
        "node_name = \"a\"\n[[services]]\nname = \"web\"\nport = 80\n",
    )
    .unwrap();
    let bad_port = root.path().join("port.toml");
    std::fs::write(&bad_port, "[[services]]\nname = \"web\"\nport = 70000\n").unwrap();
    let bad_key = root.path().join("typo.toml");
    std::fs::write(&bad_key, "[gossip]\nprobe_intervall = \"1s\"\n").unwrap();

    let valid = shoal(&["validate", &good.display().to_string()], &[]);
    assert!(valid.status.success(), "{}", text(&valid));
    assert_eq!(
        String::from_utf8_lossy(&valid.stdout),
        "Configuration is valid!\n"
    );
    // The repository's own examples validate.
    let examples = shoal(&["validate", "../config/agent.toml"], &[]);
    assert!(examples.status.success(), "{}", text(&examples));

    let invalid = shoal(
        &[
            "validate",
            &good.display().to_string(),
            &bad_port.display().to_string(),
            &bad_key.display().to_string(),
        ],
        &[],
    );
    assert_eq!(invalid.status.code(), Some(1), "{}", text(&invalid));
    let errors = String::from_utf8_lossy(&invalid.stderr);
    assert!(
        errors.contains(&format!(
            "{}: config key `services[0].Port`",
            bad_port.display()
        )),
        "{errors}"
    );
    assert!(errors.contains(&bad_key.display().to_string()), "{errors}");
    assert!(errors.contains("probe_intervall"), "{errors}");
    assert!(!errors.contains("good.toml"), "{errors}");
}

/// `config/services.toml` says what `shoal register` makes of it: its exec
/// check is refused by an agent without `--enable-script-checks` (with the
/// check and the flag named), and registers with it;
/// `config/payments.json`, which the README registers, works as it comes.
#[test]
fn the_example_service_files_register_as_their_headers_say() {
    let root = tempfile::tempdir().unwrap();
    let plain = Agent::start_serving(root.path(), "plain", &[]);
    let refused = plain.cli(&["register", "../config/services.toml"]);
    assert!(!refused.status.success());
    let printed = text(&refused);
    assert!(
        printed.contains("check `web-selftest`") && printed.contains("--enable-script-checks"),
        "{printed}"
    );
    ok(
        plain.cli(&["register", "../config/payments.json"]),
        "payments.json",
    );
    assert!(plain.get("/v1/agent/service/payments-1").is_ok());

    let scripts = Agent::start_serving(root.path(), "scripts", &["--enable-script-checks"]);
    let registered = ok(
        scripts.cli(&["services", "register", "../config/services.toml"]),
        "services.toml with script checks",
    );
    assert!(
        registered.contains("Registered service: worker-1"),
        "{registered}"
    );
    let valid = shoal(&["validate", "../config/services.toml"], &[]);
    assert!(valid.status.success(), "{}", text(&valid));
}
