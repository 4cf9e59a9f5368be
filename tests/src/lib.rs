//! A harness for cluster tests: starts real `shoal agent` processes on
//! loopback and talks to them as users do, over HTTP and the CLI.
//!
//! Every agent gets its own loopback address (`127.X.Y.Z`, derived from the
//! test process id and a counter), so agents of tests running in parallel
//! never compete for ports. Agents are killed when dropped; their logs are
//! printed when a test fails (see [`Agent::log`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod backend;
pub mod campaign;
pub mod compat;
pub mod dns;
pub mod notify;
pub mod peer;
pub mod raw;
pub mod recorder;
pub mod relay;
pub mod webdriver;

pub use backend::TinyHttp;

/// Gossip port every test agent uses on its own loopback address.
pub const GOSSIP_PORT: u16 = 17946;
/// HTTP port every test agent uses on its own loopback address.
pub const HTTP_PORT: u16 = 18500;
/// DNS port (UDP and TCP) every test agent uses on its own loopback address.
pub const DNS_PORT: u16 = 18600;

/// The `shoal` binary under test: `$SHOAL_BIN`, else the one cargo built
/// next to this test binary (built now if missing).
pub fn shoal_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("SHOAL_BIN") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/<test> -> target/<profile>/shoal
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
        let bin = profile_dir.join("shoal");
        if !bin.exists() {
            let release = profile_dir.ends_with("release");
            let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cargo.args(["build", "-p", "shoal-agent", "--bin", "shoal"]);
            if release {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("run cargo build");
            assert!(status.success(), "cargo build of the shoal binary failed");
        }
        bin
    })
}

/// A fresh loopback address no other agent of any test process uses.
pub fn unique_loopback() -> IpAddr {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    IpAddr::V4(Ipv4Addr::new(
        127,
        (1 + (pid >> 8) % 250) as u8,
        (pid & 0xff) as u8,
        (1 + n % 250) as u8,
    ))
}

/// Runs `shoal agent` with `config` and its own addresses (`dns_addr`
/// from the config); its exit code (None: still running after 20 s, then
/// killed) and what it printed.
pub fn run_agent_until_exit(root: &Path, name: &str, config: &str) -> (Option<i32>, String) {
    let path = root.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let ip = unique_loopback();
    let mut child = Command::new(shoal_bin())
        .arg("agent")
        .args(["--node", name, "--config"])
        .arg(&path)
        .args([
            "--bind",
            &format!("{ip}:17946"),
            "--http-addr",
            &format!("{ip}:18500"),
        ])
        .arg("--data-dir")
        .arg(root.join(name))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit_or_kill(&mut child, Duration::from_secs(20));
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (code, text)
}

/// Waits up to `timeout` for `child` to exit: its exit code, or `None`
/// when it was still running (it is then killed and reaped).
pub fn wait_exit_or_kill(child: &mut Child, timeout: Duration) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Options for one agent.
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    pub name: String,
    pub join: Vec<SocketAddr>,
    pub tags: Vec<(String, String)>,
    /// Extra `KEY=VALUE` environment variables.
    pub env: Vec<(String, String)>,
    /// Extra command-line arguments after `agent`.
    pub args: Vec<String>,
    /// The `shoal` binary to run (default: [`shoal_bin`]); the rolling
    /// upgrade swaps it between releases.
    pub bin: Option<PathBuf>,
}

/// A `[gossip]` section that re-announces to seeds and exchanges state
/// often, so that healed partitions and restarts are noticed in seconds.
pub const QUICK_GOSSIP: &str =
    "[gossip]\nreannounce_interval = \"1s\"\npush_pull_interval = \"2s\"\n";

impl AgentOptions {
    /// Options for an agent called `name`; the rest default.
    pub fn named(name: impl Into<String>) -> AgentOptions {
        AgentOptions {
            name: name.into(),
            ..AgentOptions::default()
        }
    }

    /// Options for an agent called `name` behind a relay: it advertises
    /// `relay` (where peers send to it) and joins through the first
    /// relay of `relays`, if any.
    pub fn behind_relay(
        name: impl Into<String>,
        relay: std::net::SocketAddr,
        relays: &[relay::Relay],
    ) -> AgentOptions {
        AgentOptions {
            join: relays.first().map(|r| vec![r.addr]).unwrap_or_default(),
            args: vec!["--advertise".into(), relay.to_string()],
            ..AgentOptions::named(name)
        }
    }

    /// Options for an agent called `name` that joins through `seed`; the
    /// rest default.
    pub fn joining(name: impl Into<String>, seed: &Agent) -> AgentOptions {
        AgentOptions {
            join: vec![seed.gossip_addr()],
            ..AgentOptions::named(name)
        }
    }

    /// Writes `config` to `path` and returns options that start the agent
    /// with `--config path` and then `extra_args`.
    pub fn with_config_file(path: &Path, config: &str, extra_args: &[&str]) -> AgentOptions {
        std::fs::write(path, config).expect("write agent config");
        let mut args = vec!["--config".to_string(), path.display().to_string()];
        args.extend(extra_args.iter().map(|arg| arg.to_string()));
        AgentOptions {
            args,
            ..AgentOptions::default()
        }
    }
}

/// A running `shoal agent` process, killed on drop.
pub struct Agent {
    pub name: String,
    pub ip: IpAddr,
    pub data_dir: PathBuf,
    pub options: AgentOptions,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Agent {
    /// Starts an agent with its own address and data dir under `root`.
    pub fn start(root: &Path, options: AgentOptions) -> Agent {
        let ip = unique_loopback();
        let data_dir = root.join(&options.name);
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let mut agent = Agent {
            name: options.name.clone(),
            ip,
            log_path: root.join(format!("{}.log", options.name)),
            data_dir,
            options,
            child: None,
        };
        agent.spawn();
        agent
    }

    /// Starts an agent called `name` with `args` and waits until its API
    /// answers `/health/live`.
    pub fn start_serving(root: &Path, name: &str, args: &[&str]) -> Agent {
        let agent = Agent::start(
            root,
            AgentOptions {
                args: args.iter().map(|a| a.to_string()).collect(),
                ..AgentOptions::named(name)
            },
        );
        agent.wait_serving();
        agent
    }

    /// Waits (up to 15 s) until this agent's API answers `/health/live`.
    pub fn wait_serving(&self) {
        wait_for(Duration::from_secs(15), "the agent to serve", || {
            self.get("/health/live").map(|_| ())
        });
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open agent log");
        let mut command = Command::new(self.options.bin.as_deref().unwrap_or(shoal_bin()));
        command
            .arg("agent")
            .args(["--node", &self.name])
            .args(["--bind", &self.gossip_addr().to_string()])
            .args(["--http-addr", &self.http_addr().to_string()])
            .args(["--dns-addr", &self.dns_addr().to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir);
        // Debug unless the test sets a level of its own.
        if !self.options.args.iter().any(|arg| arg == "--log-level") {
            command.args(["--log-level", "debug"]);
        }
        for seed in &self.options.join {
            command.args(["--join", &seed.to_string()]);
        }
        for (key, value) in &self.options.tags {
            command.args(["--tag", &format!("{key}={value}")]);
        }
        command.args(&self.options.args);
        command.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        command.env_remove("RUST_LOG");
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        self.child = Some(command.spawn().expect("spawn shoal agent"));
    }

    pub fn gossip_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, GOSSIP_PORT)
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, HTTP_PORT)
    }

    pub fn dns_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, DNS_PORT)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the same agent again (same address, data dir and options).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `GET path` on this agent's API; the body as JSON, or an error text.
    pub fn get(&self, path: &str) -> Result<Value, String> {
        http_json("GET", self.http_addr(), path, None).and_then(|(status, body)| {
            if status == 200 {
                Ok(body)
            } else {
                Err(format!("HTTP {status}: {body}"))
            }
        })
    }

    /// Members as `/v1/agent/members` shows them: `(name, status)` pairs.
    pub fn members(&self) -> Result<Vec<(String, u64)>, String> {
        let body = self.get("/v1/agent/members")?;
        Ok(body
            .as_array()
            .ok_or("members is not an array")?
            .iter()
            .map(|m| {
                (
                    m["Name"].as_str().unwrap_or_default().to_string(),
                    m["Status"].as_u64().unwrap_or_default(),
                )
            })
            .collect())
    }

    /// `PUT /v1/kv/key` with `value`; the body (`true`/`false`) or an error.
    pub fn kv_put(&self, key: &str, value: &str) -> Result<bool, String> {
        let (status, body) = http_json(
            "PUT",
            self.http_addr(),
            &format!("/v1/kv/{key}"),
            Some(value.as_bytes()),
        )?;
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        body.as_bool()
            .ok_or_else(|| format!("not a boolean: {body}"))
    }

    /// The value of `key` (raw), or `None` when it does not exist.
    pub fn kv_get(&self, key: &str) -> Result<Option<String>, String> {
        let (status, body) =
            http_json("GET", self.http_addr(), &format!("/v1/kv/{key}?raw"), None)?;
        match status {
            200 => Ok(Some(match body {
                Value::String(text) => text,
                other => other.to_string(),
            })),
            404 => Ok(None),
            _ => Err(format!("HTTP {status}: {body}")),
        }
    }

    /// `DELETE /v1/kv/key`; the HTTP status.
    pub fn kv_delete(&self, key: &str) -> Result<u16, String> {
        http_json("DELETE", self.http_addr(), &format!("/v1/kv/{key}"), None)
            .map(|(status, _)| status)
    }

    /// Waits until `key` reads as `expected` (`None`: absent) on this agent.
    pub fn wait_kv(&self, key: &str, expected: Option<&str>, timeout: Duration) {
        wait_for(
            timeout,
            &format!("{} to see {key} = {expected:?}", self.name),
            || {
                let value = self.kv_get(key)?;
                if value.as_deref() == expected {
                    Ok(())
                } else {
                    Err(format!("{value:?}"))
                }
            },
        );
    }

    /// `PUT /v1/agent/service/register` with `registration`; the status
    /// and body.
    pub fn register_service(&self, registration: &Value) -> Result<(u16, Value), String> {
        http_json(
            "PUT",
            self.http_addr(),
            "/v1/agent/service/register",
            Some(registration.to_string().as_bytes()),
        )
    }

    /// Runs `shoal <args>` against this agent's API.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(shoal_bin())
            .args(args)
            .env("SHOAL_HTTP_ADDR", self.http_addr().to_string())
            .output()
            .expect("run shoal CLI")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- log of agent {} -----\n{}", self.name, self.log());
        }
    }
}

/// One HTTP request with a JSON (or empty) body; returns status and body.
pub fn http_json(
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Value), String> {
    // The campaign's client, with a timeout long enough for any test; the
    // tests only need the error text.
    campaign::client::call(method, addr, path, body, Duration::from_secs(10)).map_err(|error| {
        match error {
            campaign::client::CallError::NotSent(text)
            | campaign::client::CallError::Unknown(text) => text,
        }
    })
}

/// Percent-encodes a query-string value (filters have spaces, quotes,
/// `==`).
pub fn query_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A datagram that looks like gossip from a new member, carrying one rumor:
/// the sender's identity, then foca's `Broadcast` message with the rumor as
/// its one custom broadcast (a big-endian u16 length, then the bytes), in a
/// plain envelope of the default cluster: what any peer holding the
/// cluster's key can send.
pub fn rumor_datagram(to: shoal_protocol::NodeId, rumor: &shoal_protocol::rumor::Rumor) -> Vec<u8> {
    broadcast_datagram(to, &[&shoal_protocol::codec::encode(rumor)])
}

/// Like [`rumor_datagram`], with custom broadcasts given as raw bytes (a
/// newer agent's rumor kinds, appended fields).
pub fn broadcast_datagram(to: shoal_protocol::NodeId, items: &[&[u8]]) -> Vec<u8> {
    broadcast_datagram_in("shoal", to, items)
}

/// Like [`broadcast_datagram`], in a plain envelope of `cluster` (the WAN
/// pool's is `shoal/wan`).
pub fn broadcast_datagram_in(
    cluster: &str,
    to: shoal_protocol::NodeId,
    items: &[&[u8]],
) -> Vec<u8> {
    use foca::Codec;
    use shoal_protocol::codec::SwimCodec;
    use shoal_protocol::envelope::cluster_id;
    use shoal_protocol::{Envelope, NodeId, PayloadKind};
    let from = NodeId {
        addr: SocketAddr::new(unique_loopback(), 17999),
        generation: 1,
    };
    let header = foca::Header {
        src: from,
        src_incarnation: 0,
        dst: to,
        message: foca::Message::Broadcast,
    };
    let mut payload = Vec::new();
    SwimCodec
        .encode_header(&header, &mut payload)
        .expect("encode a header");
    for item in items {
        let length = u16::try_from(item.len()).expect("a rumor fits a datagram");
        payload.extend_from_slice(&length.to_be_bytes());
        payload.extend_from_slice(item);
    }
    Envelope::new(cluster_id(cluster)).seal(PayloadKind::Swim, &payload, [0; 24])
}

/// A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`, ...), if the
/// process is alive.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Polls `check` until it returns `Some`, or panics with `what` and the last
/// observation after `timeout`.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last observed: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A set of agents that all join through the first one.
pub struct Cluster {
    pub agents: Vec<Agent>,
    pub root: tempfile::TempDir,
}

impl Cluster {
    /// Starts `size` agents named `node-0`..; all join through `node-0`.
    pub fn start(size: usize) -> Cluster {
        Self::start_with(size, |_| AgentOptions::default())
    }

    /// Like [`Cluster::start`], with options per agent (`name` and `join`
    /// are filled in).
    pub fn start_with(size: usize, options: impl Fn(usize) -> AgentOptions) -> Cluster {
        let root = tempfile::tempdir().expect("tempdir");
        let mut agents: Vec<Agent> = Vec::new();
        for i in 0..size {
            let join = agents
                .first()
                .map(|a| vec![a.gossip_addr()])
                .unwrap_or_default();
            agents.push(Agent::start(
                root.path(),
                AgentOptions {
                    name: format!("node-{i}"),
                    join,
                    ..options(i)
                },
            ));
        }
        Cluster { agents, root }
    }

    /// Cuts agents `side` off from agents `other`, both ways, with the
    /// fault hook (the agents run with `--fault-injection`).
    pub fn cut(&self, side: &[usize], other: &[usize]) {
        let ips = |agents: &[usize]| {
            agents
                .iter()
                .map(|&i| self.agents[i].ip.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        for (from, to) in [(side, other), (other, side)] {
            self.fault_block(from, &ips(to));
        }
    }

    /// Ends every cut made with [`Cluster::cut`].
    pub fn heal(&self) {
        let all: Vec<usize> = (0..self.agents.len()).collect();
        self.fault_block(&all, "");
    }

    fn fault_block(&self, agents: &[usize], ips: &str) {
        for &i in agents {
            let path = format!("/v1/shoal/fault?block={ips}");
            let (status, body) = http_json("PUT", self.agents[i].http_addr(), &path, None).unwrap();
            assert_eq!(status, 200, "{body}");
        }
    }

    /// Waits until every agent reports all agents alive.
    pub fn wait_all_alive(&self, timeout: Duration) {
        let expected: Vec<(String, u64)> =
            self.agents.iter().map(|a| (a.name.clone(), 1)).collect();
        let all: Vec<usize> = (0..self.agents.len()).collect();
        self.wait_members(&all, &expected, timeout);
    }

    /// Waits until every listed agent reports exactly `expected` as
    /// `(name, Consul status)` pairs, sorted by name.
    pub fn wait_members(&self, which: &[usize], expected: &[(String, u64)], timeout: Duration) {
        let mut expected = expected.to_vec();
        expected.sort();
        for &i in which {
            let agent = &self.agents[i];
            wait_for(
                timeout,
                &format!("{} to see {expected:?}", agent.name),
                || {
                    let mut seen = agent.members()?;
                    seen.sort();
                    if seen == expected {
                        Ok(())
                    } else {
                        Err(format!("{seen:?}"))
                    }
                },
            );
        }
    }
}
