//! `[[templates]]` with real processes: a template over `service("web")`
//! and `key("app/color")` on one agent of two renders what the other
//! registers and writes, follows a failing check and a key change, runs
//! its command once per change, keeps the old file on a syntax error and
//! reports it, and renders a few times only under a storm of KV writes.
//! `shoal template render` prints a dry run; dry runs are one at a time and
//! bounded in memory; a symlinked destination is refused and an existing
//! file's setuid bit is not copied. The nginx consumer is in
//! `template_nginx.rs`. A command past its timeout is killed with its
//! children.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_tests::{Agent, AgentOptions, http_json, wait_for};

const TEMPLATE: &str = r#"color={{ key("app/color") }}
{% for s in service("web") %}server {{ s.id }} {{ s.address }}:{{ s.port }}
{% endfor %}"#;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_file(path: &Path, expected: &str, timeout: Duration) {
    wait_for(
        timeout,
        &format!("{} to read {expected:?}", path.display()),
        || {
            let text = read(path);
            if text == expected {
                Ok(())
            } else {
                Err(format!("{text:?}"))
            }
        },
    );
}

fn command_runs(log: &Path) -> usize {
    read(log).lines().count()
}

fn template_stats(agent: &Agent) -> Value {
    agent.get("/v1/agent/self").expect("agent self")["Stats"]["templates"].clone()
}

/// `node-0` with `config` as its config file, serving.
fn serving_node_0(dir: &Path, config: &str) -> Agent {
    let agent = Agent::start(
        dir,
        AgentOptions {
            name: "node-0".into(),
            ..AgentOptions::with_config_file(&dir.join("node-0.toml"), config, &[])
        },
    );
    agent.wait_serving();
    agent
}

fn register_web(agent: &Agent, index: u16) {
    let (status, body) = agent
        .register_service(&json!({
            "Name": "web",
            "ID": format!("web-{index}"),
            "Address": "10.0.0.1",
            "Port": 8000 + index,
            "Check": {"CheckID": format!("web-{index}-ttl"), "TTL": "600s", "Status": "passing"}
        }))
        .expect("register");
    assert_eq!(status, 200, "{body}");
}

fn set_check(agent: &Agent, check: &str, verb: &str) {
    let (status, body) = http_json(
        "PUT",
        agent.http_addr(),
        &format!("/v1/agent/check/{verb}/{check}"),
        None,
    )
    .expect("check update");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_template_follows_the_catalog_and_the_kv() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let source = dir.join("web.j2");
    let destination = dir.join("out").join("web.conf");
    let log = dir.join("commands.log");
    std::fs::create_dir_all(destination.parent().unwrap()).unwrap();
    std::fs::write(&source, TEMPLATE).unwrap();
    let config = format!(
        r#"
[[templates]]
source = "{source}"
destination = "{destination}"
command = ["/bin/sh", "-c", "echo changed >> {log}"]
perms = "0600"
wait = {{ min = "200ms", max = "2s" }}
"#,
        source = source.display(),
        destination = destination.display(),
        log = log.display(),
    );
    let first = serving_node_0(dir, &config);
    let second = Agent::start(dir, AgentOptions::joining("node-1", &first));
    second.wait_serving();

    // The key is missing: the render fails, nothing is written, and it says so.
    wait_for(
        Duration::from_secs(20),
        "the missing key to be reported",
        || {
            let stats = template_stats(&first);
            let error = stats["templates"][0]["last_error"]
                .as_str()
                .unwrap_or_default();
            if error.contains("app/color") {
                Ok(())
            } else {
                Err(stats.to_string())
            }
        },
    );
    assert!(!destination.exists());

    // Everything comes from the other agent.
    register_web(&second, 1);
    register_web(&second, 2);
    assert!(second.kv_put("app/color", "blue").unwrap());
    let both = "color=blue\nserver web-1 10.0.0.1:8001\nserver web-2 10.0.0.1:8002\n";
    wait_file(&destination, both, Duration::from_secs(30));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&destination)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Settled: one command run per version of the file so far (the
    // registrations and the key may have come in one render or several).
    std::thread::sleep(Duration::from_secs(3));
    let writes = template_stats(&first)["writes"].as_u64().unwrap() as usize;
    assert_eq!(command_runs(&log), writes, "one command run per write");
    let runs = command_runs(&log);

    // A failing check re-renders without the instance: one more run.
    set_check(&second, "web-2-ttl", "fail");
    let one = "color=blue\nserver web-1 10.0.0.1:8001\n";
    wait_file(&destination, one, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(command_runs(&log), runs + 1, "{}", read(&log));

    // A change to the key re-renders: one more run.
    assert!(second.kv_put("app/color", "green").unwrap());
    let green = "color=green\nserver web-1 10.0.0.1:8001\n";
    wait_file(&destination, green, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(command_runs(&log), runs + 2, "{}", read(&log));

    // A change the output does not show renders but writes nothing and
    // runs nothing.
    let renders = template_stats(&first)["renders"].as_u64().unwrap();
    assert!(second.kv_put("app/other", "x").unwrap());
    wait_for(
        Duration::from_secs(20),
        "a render after an unrelated KV write",
        || {
            let now = template_stats(&first)["renders"].as_u64().unwrap();
            if now > renders {
                Ok(())
            } else {
                Err(now.to_string())
            }
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(command_runs(&log), runs + 2, "{}", read(&log));
    assert_eq!(read(&destination), green);

    // A syntax error keeps the old file and shows in /v1/agent/self and
    // /health/detailed; fixing it clears the error.
    std::fs::write(&source, "{% for s in %}broken").unwrap();
    wait_for(
        Duration::from_secs(20),
        "the syntax error to be reported",
        || {
            let detailed = first.get("/health/detailed")?;
            let template = &detailed["templates"][0];
            if template["status"] == "error"
                && template["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("syntax error")
            {
                Ok(())
            } else {
                Err(detailed.to_string())
            }
        },
    );
    let stats = template_stats(&first);
    assert!(
        stats["templates"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("line 1"),
        "{stats}"
    );
    assert!(stats["errors"].as_u64().unwrap() >= 2, "{stats}");
    assert_eq!(read(&destination), green);
    std::fs::write(&source, TEMPLATE).unwrap();
    wait_for(Duration::from_secs(20), "the error to clear", || {
        let stats = template_stats(&first);
        if stats["templates"][0]["last_error"].is_null() {
            Ok(())
        } else {
            Err(stats.to_string())
        }
    });
    assert_eq!(command_runs(&log), runs + 2, "{}", read(&log));

    // A storm: 100 writes in about a second render only a few times, and
    // the last value is in the file within wait.max of the end.
    let before = template_stats(&first);
    let started = Instant::now();
    for i in 0..100 {
        assert!(first.kv_put("app/color", &format!("c{i}")).unwrap());
        std::thread::sleep(Duration::from_millis(8));
    }
    let storm = started.elapsed();
    let ended = Instant::now();
    let last = "color=c99\nserver web-1 10.0.0.1:8001\n";
    wait_file(&destination, last, Duration::from_secs(20));
    let settled_after = ended.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let after = template_stats(&first);
    let renders = after["renders"].as_u64().unwrap() - before["renders"].as_u64().unwrap();
    let writes = after["writes"].as_u64().unwrap() - before["writes"].as_u64().unwrap();
    eprintln!(
        "storm of 100 writes in {storm:?}: {renders} renders, {writes} writes, \
         file final {settled_after:?} after the last write"
    );
    assert!(renders <= 4, "{renders} renders for the storm: {after}");
    assert!(writes >= 1 && writes <= renders, "{after}");
    // wait.max (2s), with room for a loaded machine.
    assert!(settled_after < Duration::from_secs(8), "{settled_after:?}");
    assert_eq!(command_runs(&log), runs + 2 + writes as usize);

    // The dry run prints what the template renders now, and runs nothing.
    let output = first.cli(&["template", "render", &source.display().to_string()]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), last);
    let env = dir.join("env.j2");
    std::fs::write(&env, "{{ env('HOME') }}").unwrap();
    let output = first.cli(&["template", "render", &env.display().to_string()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("env(\"HOME\") is not available"),
        "{stderr}"
    );
    let output = first.cli(&["template", "render", "--env", &env.display().to_string()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("acl.token"), "{stderr}");
    assert_eq!(command_runs(&log), runs + 2 + writes as usize);

    // Templates reload with the config file: a new one renders at once.
    let second_file = dir.join("out").join("second.txt");
    let reloaded = format!(
        "{config}\n[[templates]]\ncontents = \"{{{{ key('app/color') }}}}\"\ndestination = \"{}\"\n",
        second_file.display()
    );
    std::fs::write(dir.join("node-0.toml"), reloaded).unwrap();
    wait_file(&second_file, "c99", Duration::from_secs(20));
    assert_eq!(read(&destination), last);
}

/// Render latency after a catalog change, and the idle CPU of an agent with
/// 10 templates. A measurement, not a test: `cargo test -p shoal-tests
/// --test templates -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_render_latency_and_idle_cpu() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    // SHOAL_TEMPLATE_WAIT_MIN sets wait.min (default 100ms, the default).
    let wait_min = std::env::var("SHOAL_TEMPLATE_WAIT_MIN").unwrap_or_else(|_| "100ms".into());
    let mut config = String::new();
    for i in 0..10 {
        config.push_str(&format!(
            "[[templates]]\ncontents = '''{TEMPLATE}'''\ndestination = \"{}/out-{i}.conf\"\n\
             wait = {{ min = \"{wait_min}\", max = \"1s\" }}\n\n",
            dir.display()
        ));
    }
    let agent = serving_node_0(dir, &config);
    agent.kv_put("app/color", "blue").unwrap();
    register_web(&agent, 1);
    register_web(&agent, 2);
    let out = dir.join("out-0.conf");
    wait_for(Duration::from_secs(20), "a first render", || {
        if read(&out).contains("web-2") {
            Ok(())
        } else {
            Err(read(&out))
        }
    });
    let mut latencies = Vec::new();
    for round in 0..10 {
        let verb = if round % 2 == 0 { "fail" } else { "pass" };
        set_check(&agent, "web-2-ttl", verb);
        let want_web2 = verb == "pass";
        let mut visible = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        let written = loop {
            assert!(Instant::now() < deadline, "no render");
            if visible.is_none() {
                let body = agent.get("/v1/health/service/web?passing").unwrap();
                if (body.as_array().unwrap().len() == 2) == want_web2 {
                    visible = Some(Instant::now());
                }
            }
            if read(&out).contains("web-2") == want_web2 {
                break Instant::now();
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let visible = visible.unwrap_or(written);
        latencies.push(written.saturating_duration_since(visible));
    }
    latencies.sort();
    eprintln!(
        "render latency (API shows the change -> file written), wait.min {wait_min}: \
         min {:?}, median {:?}, max {:?}",
        latencies[0], latencies[5], latencies[9]
    );
    let cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let pid = agent.pid().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let (ticks, started) = (cpu(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(60));
    let used = cpu(pid) - ticks;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "idle CPU with 10 templates: {used} ticks in {seconds:.1}s = {:.3}% of a core",
        100.0 * used as f64 / hz / seconds
    );
}

/// The dry run is a read; with `env()` it needs the token, and it never
/// shows the agent's environment without it.
#[test]
fn dry_runs_guard_the_environment() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let token = "template-test-token";
    let agent = Agent::start(
        dir,
        AgentOptions {
            name: "node-0".into(),
            env: vec![("SHOAL_TEST_SECRET".into(), "hunter2".into())],
            ..AgentOptions::with_config_file(
                &dir.join("node-0.toml"),
                &format!("[acl]\ntoken = \"{token}\"\n"),
                &[],
            )
        },
    );
    agent.wait_serving();
    assert!(
        agent
            .kv_put(&format!("app/color?token={token}"), "blue")
            .unwrap()
    );
    let post = |path: &str, template: &str| {
        let body = json!({ "template": template }).to_string();
        http_json("POST", agent.http_addr(), path, Some(body.as_bytes())).unwrap()
    };
    let plain = "/v1/shoal/template/render";
    let with_env = "/v1/shoal/template/render-env";
    // A read: no token needed (reads are open without acl.protect_reads).
    let (status, body) = post(plain, "{{ key('app/color') }}");
    assert_eq!(
        (status, body["output"].as_str()),
        (200, Some("blue")),
        "{body}"
    );
    assert_eq!(body["reads"], json!(["kv"]));
    let (status, body) = post(plain, "{{ env('SHOAL_TEST_SECRET') }}");
    assert_eq!(status, 422, "{body}");
    assert!(!body.to_string().contains("hunter2"), "{body}");
    let (status, body) = post(with_env, "{{ env('SHOAL_TEST_SECRET') }}");
    assert_eq!(status, 403, "{body}");
    assert!(!body.to_string().contains("hunter2"), "{body}");
    let (status, body) = post(
        &format!("{with_env}?token={token}"),
        "{{ env('SHOAL_TEST_SECRET') }}",
    );
    assert_eq!(
        (status, body["output"].as_str()),
        (200, Some("hunter2")),
        "{body}"
    );
    // Bad input: 400 or 422 naming what was wrong.
    let (status, body) = post(plain, "{% for %}");
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("syntax error"),
        "{body}"
    );
    let (status, body) = http_json(
        "POST",
        agent.http_addr(),
        plain,
        Some(b"{\"templ\": \"x\"}"),
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("template"),
        "{body}"
    );
    // Work is bounded: a runaway loop runs out of fuel.
    let (status, body) = post(
        plain,
        "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
    );
    assert_eq!(status, 422, "{body}");
}

/// Dry runs are one at a time: one that arrives while another runs gets
/// 429 naming the limit. A render that would build hundreds of MB (a
/// string repeated, printed twice) is refused quickly, and the agent's
/// peak memory barely moves.
#[test]
fn dry_runs_are_one_at_a_time_and_bounded_in_memory() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "node-0", &[]);
    let addr = agent.http_addr();
    let post = move |template: &str| {
        let body = json!({ "template": template }).to_string();
        http_json(
            "POST",
            addr,
            "/v1/shoal/template/render",
            Some(body.as_bytes()),
        )
        .unwrap()
    };
    let pid = agent.pid().unwrap();
    let peak_before = shoal_tests::proc_status_kib(pid, "VmHWM").unwrap();
    for heavy in [
        r#"{% set s = "x" * 100000000 %}{{ s }}{{ s }}"#,
        r#"{% set s = "x" * 50000000 %}{% set t = s ~ s %}{{ t|length }}"#,
    ] {
        let started = Instant::now();
        let (status, body) = post(heavy);
        let took = started.elapsed();
        assert_eq!(status, 422, "{body}");
        eprintln!("heavy dry run refused in {took:?}: {}", body["error"]);
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
    // Just within the fuel: ~14 MB built, and answered.
    let (status, body) = post(r#"{% set s = "x" * 12000000 %}{% set t = "y" * 2000000 %}built"#);
    assert_eq!(
        (status, body["output"].as_str()),
        (200, Some("built")),
        "{body}"
    );
    let peak_after = shoal_tests::proc_status_kib(pid, "VmHWM").unwrap();
    eprintln!("VmHWM {peak_before} -> {peak_after} KiB");
    assert!(
        peak_after - peak_before < 40 * 1024,
        "peak memory grew by {} KiB",
        peak_after - peak_before
    );

    // Four at once, a few rounds: some find another one running.
    let busy = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
    let mut refused = None;
    for _round in 0..10 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    post(busy)
                })
            })
            .collect();
        let answers: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            answers
                .iter()
                .all(|(status, _)| [422, 429].contains(status)),
            "{answers:?}"
        );
        assert!(
            answers.iter().any(|(status, _)| *status == 422),
            "{answers:?}"
        );
        if let Some((_, body)) = answers.into_iter().find(|(status, _)| *status == 429) {
            refused = Some(body);
            break;
        }
    }
    let refused = refused.expect("no dry run was refused while another ran");
    let message = refused["error"].as_str().unwrap();
    assert!(message.contains("one dry run at a time"), "{message}");
    let stats = template_stats(&agent);
    assert!(stats["dry_runs_refused"].as_u64().unwrap() >= 1, "{stats}");
}

/// A destination that is a symbolic link is refused (the link and what it
/// points to stay as they were); an existing file's setuid bit is not
/// carried over to the rendered file.
#[test]
fn template_output_refuses_symlinks_and_drops_setuid_bits() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let target = out.join("target.conf");
    std::fs::write(&target, "original").unwrap();
    let link = out.join("link.conf");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let suid = out.join("suid.conf");
    std::fs::write(&suid, "old").unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let config = format!(
        "[[templates]]\ncontents = \"linked\"\ndestination = \"{}\"\n\n\
         [[templates]]\ncontents = \"rendered\"\ndestination = \"{}\"\n",
        link.display(),
        suid.display()
    );
    let agent = serving_node_0(dir, &config);
    wait_file(&suid, "rendered", Duration::from_secs(20));
    let mode = std::fs::metadata(&suid).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "mode {mode:o}");
    let error = wait_for(Duration::from_secs(20), "the symlink to be refused", || {
        let stats = template_stats(&agent);
        let templates = stats["templates"].as_array().cloned().unwrap_or_default();
        templates
            .iter()
            .find(|t| t["destination"] == link.display().to_string())
            .and_then(|t| t["last_error"].as_str().map(str::to_string))
            .ok_or_else(|| stats.to_string())
    });
    assert!(error.contains("symbolic link"), "{error}");
    assert!(error.contains(&link.display().to_string()), "{error}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read(&target), "original");
}

/// Whether `pid` names a live process (not a zombie waiting to be reaped).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// A template command that outlives its `command_timeout` is killed with
/// everything it started: a grandchild left running would pile up with
/// every render (the command runs in a process group of its own, and the
/// timeout kills the group, as for exec checks and watch handlers).
#[test]
fn a_template_command_past_its_timeout_is_killed_with_its_children() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let destination = dir.join("out.conf");
    let pidfile = dir.join("grandchild.pid");
    let command = format!("sleep 300 & echo $! > {}; sleep 300", pidfile.display());
    let config = format!(
        "[[templates]]\ncontents = \"rendered\"\ndestination = \"{}\"\n\
         command = [\"/bin/sh\", \"-c\", \"{command}\"]\ncommand_timeout = \"1s\"\n",
        destination.display()
    );
    let agent = serving_node_0(dir, &config);
    wait_file(&destination, "rendered", Duration::from_secs(20));
    let error = wait_for(Duration::from_secs(30), "the command to time out", || {
        let stats = template_stats(&agent);
        stats["templates"][0]["last_command"]["error"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| stats.to_string())
    });
    assert!(error.contains("command_timeout"), "{error}");
    let pid: i32 = read(&pidfile).trim().parse().expect("the grandchild's pid");
    // Killed at the end whatever happens, so that a failure leaves no
    // `sleep 300` behind.
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: kill(2) takes plain integers.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _grandchild = KillOnDrop(pid);
    wait_for(
        Duration::from_secs(10),
        "the grandchild to be killed",
        || {
            if alive(pid) {
                Err(format!("pid {pid} still runs"))
            } else {
                Ok(())
            }
        },
    );
}
