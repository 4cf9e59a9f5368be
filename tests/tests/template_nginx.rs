//! A real consumer of `[[templates]]`: Debian's nginx, run standalone as a
//! reverse proxy (its own prefix, config, pid and logs in a temp dir, on a
//! free loopback port), whose upstream list a Shoal template renders from
//! the catalog, with `nginx -s reload` as the template's command. Two real
//! HTTP backends are registered with HTTP checks; requests through nginx
//! reach only the passing ones, and follow a failure and a recovery. The
//! failing backend keeps answering `/` all along: only the template keeps
//! traffic away from it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use shoal_tests::{Agent, AgentOptions, TinyHttp, unique_loopback, wait_for};

const NGINX: &str = "/usr/sbin/nginx";

/// A backend that answers `/` with its name, and `/health` with 200 or
/// 500 as `healthy` says.
struct Backend {
    http: TinyHttp,
    healthy: Arc<AtomicBool>,
}

impl Backend {
    fn start(name: &'static str) -> Backend {
        let healthy = Arc::new(AtomicBool::new(true));
        let is_healthy = healthy.clone();
        let http = TinyHttp::serve((unique_loopback(), 0).into(), move |request| {
            let (status, body) = if request.starts_with("GET /health") {
                if is_healthy.load(Ordering::Relaxed) {
                    ("200 OK", "ok")
                } else {
                    ("500 Internal Server Error", "failing")
                }
            } else {
                ("200 OK", name)
            };
            (status.into(), body.into())
        });
        Backend { http, healthy }
    }
}

/// nginx in the foreground with everything under `prefix`; killed on drop.
struct Nginx {
    child: Child,
    prefix: PathBuf,
}

impl Nginx {
    /// The arguments that find this instance: `-p`, `-c` and the pid file.
    fn args(prefix: &Path) -> Vec<String> {
        vec![
            "-p".into(),
            format!("{}/", prefix.display()),
            "-c".into(),
            prefix.join("nginx.conf").display().to_string(),
            "-g".into(),
            format!("daemon off; pid {}/nginx.pid;", prefix.display()),
        ]
    }

    fn start(prefix: &Path) -> Nginx {
        let log = std::fs::File::create(prefix.join("nginx.out")).unwrap();
        let child = Command::new(NGINX)
            .args(Self::args(prefix))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nginx");
        Nginx {
            child,
            prefix: prefix.to_path_buf(),
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful stop of the master and its workers.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            for file in ["nginx.out", "error.log", "upstreams.conf"] {
                let text = std::fs::read_to_string(self.prefix.join(file)).unwrap_or_default();
                eprintln!("----- {file} -----\n{text}");
            }
        }
    }
}

/// One request through nginx: the backend's name, or what went wrong.
fn through(proxy: SocketAddr) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&proxy, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no body")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    Ok(body.to_string())
}

/// Waits until `rounds` requests in a row reach exactly the backends in
/// `expected` (every one of them, nothing else).
fn wait_routed(proxy: SocketAddr, expected: &[&str], what: &str) {
    wait_for(Duration::from_secs(30), what, || {
        let mut seen = Vec::new();
        for _ in 0..12 {
            let name = through(proxy)?;
            if !expected.contains(&name.as_str()) {
                return Err(format!("a request reached {name}"));
            }
            if !seen.contains(&name) {
                seen.push(name);
            }
        }
        if seen.len() == expected.len() {
            Ok(())
        } else {
            Err(format!("only {seen:?} answered"))
        }
    });
}

#[test]
fn nginx_follows_the_catalog_through_a_template() {
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} is missing: run scripts/test (it installs Debian's nginx)"
    );
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let listen = {
        let probe = TcpListener::bind((unique_loopback(), 0)).unwrap();
        probe.local_addr().unwrap()
    };
    std::fs::write(
        prefix.join("nginx.conf"),
        format!(
            r#"worker_processes 1;
error_log {p}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    include {p}/upstreams.conf;
    server {{
        listen {listen};
        location / {{
            proxy_pass http://web;
            proxy_connect_timeout 1s;
        }}
    }}
}}
"#,
            p = prefix.display(),
        ),
    )
    .unwrap();

    let alpha = Backend::start("alpha");
    let beta = Backend::start("beta");
    let mut command = vec![NGINX.to_string()];
    command.extend(Nginx::args(&prefix));
    command.extend(["-s".to_string(), "reload".to_string()]);
    let config = format!(
        r#"
[[templates]]
contents = '''
upstream web {{
{{% for s in service("web") %}}    server {{{{ s.address }}}}:{{{{ s.port }}}};  # {{{{ s.id }}}}
{{% else %}}    server 127.0.0.1:9 down;  # no passing instance
{{% endfor %}}}}
'''
destination = "{upstreams}"
command = {command}
wait = {{ min = "100ms", max = "1s" }}
"#,
        upstreams = prefix.join("upstreams.conf").display(),
        command = json!(command),
    );
    let agent = Agent::start(
        dir,
        AgentOptions {
            name: "node-0".into(),
            ..AgentOptions::with_config_file(&dir.join("node-0.toml"), &config, &[])
        },
    );
    agent.wait_serving();
    for (id, backend) in [("web-alpha", &alpha), ("web-beta", &beta)] {
        let (status, body) = agent
            .register_service(&json!({
                "Name": "web",
                "ID": id,
                "Address": backend.http.addr.ip().to_string(),
                "Port": backend.http.addr.port(),
                "Check": {
                    "CheckID": format!("{id}-http"),
                    "HTTP": format!("http://{}/health", backend.http.addr),
                    "Interval": "300ms",
                    "Timeout": "1s"
                }
            }))
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let upstreams = prefix.join("upstreams.conf");
    wait_for(
        Duration::from_secs(30),
        "both backends in upstreams.conf",
        || {
            let text = std::fs::read_to_string(&upstreams).unwrap_or_default();
            if text.contains("web-alpha") && text.contains("web-beta") {
                Ok(())
            } else {
                Err(text)
            }
        },
    );

    // Reloads before nginx runs fail (no pid file yet); none after.
    std::thread::sleep(Duration::from_secs(2));
    let template_stats = || agent.get("/v1/agent/self").unwrap()["Stats"]["templates"].clone();
    let failures_before = template_stats()["command_failures"].as_u64().unwrap();
    let _nginx = Nginx::start(&prefix);
    wait_routed(listen, &["alpha", "beta"], "nginx to reach both backends");

    // beta fails its health check (it still answers `/`): the template
    // drops it, nginx reloads, and no request reaches it any more.
    beta.healthy.store(false, Ordering::Relaxed);
    wait_routed(listen, &["alpha"], "nginx to reach only alpha");
    let text = std::fs::read_to_string(&upstreams).unwrap();
    assert!(!text.contains("web-beta"), "{text}");

    // beta recovers: back in rotation.
    beta.healthy.store(true, Ordering::Relaxed);
    wait_routed(
        listen,
        &["alpha", "beta"],
        "nginx to reach both backends again",
    );

    let stats = template_stats();
    assert!(stats["command_runs"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(stats["command_failures"], failures_before, "{stats}");
    assert_eq!(stats["templates"][0]["last_command"]["ok"], true, "{stats}");
}
