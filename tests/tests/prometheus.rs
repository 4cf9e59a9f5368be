//! The real Prometheus (Debian's 2.42 `prometheus` package) against a
//! three-agent cluster: it scrapes every agent's `/metrics` (all targets
//! up), and discovers service instances through `http_sd_configs` on
//! `/v1/shoal/prometheus/targets?passing`, following a registration, a
//! deregistration and a check failure within two refresh intervals (the
//! test allows far more, and prints what it measured).

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_tests::{Agent, Cluster, http_json, unique_loopback, wait_for};

/// How often Prometheus asks the agent for targets. Prometheus passes
/// what discovery found to its scrape manager at most every 5 s (its
/// discovery manager's update throttle), so a change shows in
/// `/api/v1/targets` 0-5 s after a refresh saw it: with 3 s, within two
/// refresh intervals.
const REFRESH: Duration = Duration::from_secs(3);
/// What the test allows for a change to show in Prometheus: far more than
/// the two refresh intervals (plus a scrape) it takes on an idle machine.
const BOUND: Duration = Duration::from_secs(30);

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(config: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        // A free port on an address of its own.
        let addr = TcpListener::bind((unique_loopback(), 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "prometheus is not installed: run scripts/test (or `apt-get install prometheus`)",
            );
        let prometheus = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        wait_for(
            Duration::from_secs(60),
            "Prometheus to be ready",
            || match http_json("GET", prometheus.addr, "/-/ready", None) {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `/api/v1/targets`' active targets of `job`.
    fn targets(&self, job: &str) -> Result<Vec<Value>, String> {
        let (status, body) = http_json("GET", self.addr, "/api/v1/targets?state=active", None)?;
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(body["data"]["activeTargets"]
            .as_array()
            .ok_or("no activeTargets")?
            .iter()
            .filter(|target| target["scrapePool"] == job)
            .cloned()
            .collect())
    }

    /// The `service_id` label of the targets of `job`, sorted.
    fn service_ids(&self, job: &str) -> Result<Vec<String>, String> {
        let mut ids: Vec<String> = self
            .targets(job)?
            .iter()
            .map(|t| {
                t["labels"]["service_id"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string()
            })
            .collect();
        ids.sort();
        Ok(ids)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- Prometheus log -----\n{}", self.log());
        }
    }
}

/// `text` as a query-string value.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Waits until Prometheus's discovered instances are `expected`; returns
/// how long that took.
fn wait_discovered(prometheus: &Prometheus, expected: &[&str], what: &str) -> Duration {
    let started = Instant::now();
    wait_for(BOUND, what, || {
        let ids = prometheus.service_ids("services")?;
        if ids == expected {
            Ok(())
        } else {
            Err(format!("{ids:?}"))
        }
    });
    let took = started.elapsed();
    eprintln!(
        "{what}: {:.2} s (refresh interval {REFRESH:?})",
        took.as_secs_f64()
    );
    took
}

fn register(agent: &Agent, id: &str) {
    // The instance is the agent's own HTTP API, so Prometheus can scrape it.
    let (status, body) = agent
        .register_service(&json!({
            "Name": "sidecar-metrics", "ID": id, "Port": agent.http_addr().port(),
            "Address": agent.ip.to_string(), "Tags": ["metrics"], "Meta": {"team": "core"},
            "Check": {"TTL": "10m", "Status": "passing"},
        }))
        .expect("register");
    assert_eq!(status, 200, "{body}");
}

/// The ID of the only check of service `id` on `agent`.
fn check_of(agent: &Agent, id: &str) -> String {
    let checks = agent.get("/v1/agent/checks").expect("checks");
    checks
        .as_object()
        .expect("checks object")
        .values()
        .find(|check| check["ServiceID"] == id)
        .and_then(|check| check["CheckID"].as_str())
        .expect("the service's check")
        .to_string()
}

#[test]
fn prometheus_scrapes_every_agent_and_follows_the_catalog() {
    let cluster = Cluster::start(3);
    cluster.wait_all_alive(Duration::from_secs(30));
    let [a, b, c] = &cluster.agents[..] else {
        unreachable!()
    };
    register(b, "metrics-b");
    let scrape: Vec<String> = cluster
        .agents
        .iter()
        .map(|agent| format!("'{}'", agent.http_addr()))
        .collect();
    let config = format!(
        r#"
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: shoal
    static_configs:
      - targets: [{targets}]
  - job_name: services
    http_sd_configs:
      - url: 'http://{sd}/v1/shoal/prometheus/targets?service=sidecar-metrics&passing'
        refresh_interval: {refresh}s
    relabel_configs:
      - source_labels: [__meta_shoal_service_id]
        target_label: service_id
      - source_labels: [__meta_shoal_node]
        target_label: node
      - source_labels: [__meta_shoal_service_meta_team]
        target_label: team
      - source_labels: [__meta_shoal_tags]
        regex: '.*,metrics,.*'
        action: keep
"#,
        targets = scrape.join(", "),
        sd = a.http_addr(),
        refresh = REFRESH.as_secs(),
    );
    let prometheus = Prometheus::start(&config);

    // Every agent scraped, and up.
    wait_for(BOUND, "every agent's /metrics up in Prometheus", || {
        let targets = prometheus.targets("shoal")?;
        let up = targets.iter().filter(|t| t["health"] == "up").count();
        if up == 3 {
            Ok(())
        } else {
            Err(format!("{targets:?}"))
        }
    });
    // And what Prometheus stored is what the agents count.
    wait_for(BOUND, "up == 1 and shoal_members for every agent", || {
        let query = r#"sum(up{job="shoal"}) + sum(shoal_members{job="shoal",status="alive"})"#;
        let (_, body) = http_json(
            "GET",
            prometheus.addr,
            &format!("/api/v1/query?query={}", percent_encode(query)),
            None,
        )?;
        let value = body["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or("")
            .to_string();
        // 3 targets up + each of 3 agents seeing 3 alive members.
        if value == "12" {
            Ok(())
        } else {
            Err(format!("{body}"))
        }
    });

    // Discovery: the registered instance, scraped through its labels.
    wait_discovered(&prometheus, &["metrics-b"], "the first instance discovered");
    wait_for(BOUND, "the discovered instance scraped", || {
        let targets = prometheus.targets("services")?;
        match &targets[..] {
            [target]
                if target["health"] == "up"
                    && target["labels"]["node"] == b.name.as_str()
                    && target["labels"]["team"] == "core" =>
            {
                Ok(())
            }
            _ => Err(format!("{targets:?}")),
        }
    });

    let mut measured = Vec::new();
    register(c, "metrics-c");
    measured.push(wait_discovered(
        &prometheus,
        &["metrics-b", "metrics-c"],
        "a registration",
    ));

    let (status, body) = http_json(
        "PUT",
        c.http_addr(),
        "/v1/agent/service/deregister/metrics-c",
        None,
    )
    .expect("deregister");
    assert_eq!(status, 200, "{body}");
    measured.push(wait_discovered(
        &prometheus,
        &["metrics-b"],
        "a deregistration",
    ));

    let check = check_of(b, "metrics-b");
    let (status, body) = http_json(
        "PUT",
        b.http_addr(),
        &format!("/v1/agent/check/fail/{check}"),
        None,
    )
    .expect("fail the check");
    assert_eq!(status, 200, "{body}");
    measured.push(wait_discovered(&prometheus, &[], "a check failure"));

    let (status, _) = http_json(
        "PUT",
        b.http_addr(),
        &format!("/v1/agent/check/pass/{check}"),
        None,
    )
    .expect("pass the check");
    assert_eq!(status, 200);
    measured.push(wait_discovered(&prometheus, &["metrics-b"], "a recovery"));
    eprintln!(
        "changes seen by Prometheus after {:?} (two refresh intervals: {:?})",
        measured,
        REFRESH * 2
    );
}
