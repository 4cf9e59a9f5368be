//! The two systems under test, behind one interface: how to start an agent,
//! how to read an agent's membership view, how to make a node-level change
//! on one agent and how to tell whether another agent has seen it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::Method;

use crate::http::HttpClient;
use crate::process::ChildGuard;
use crate::serf_rpc::SerfRpc;

#[derive(Clone, Debug)]
pub enum System {
    /// `serf_intervals`: anti-entropy every 30 s, Serf's push-pull
    /// interval (Shoal's default is 15 s), and suspicion multiplier 4,
    /// Serf's (Shoal's default is 3.5); probe and gossip settings are
    /// Serf's LAN profile either way.
    Shoal {
        bin: PathBuf,
        serf_intervals: bool,
    },
    Serf {
        bin: PathBuf,
    },
}

/// One running agent.
pub struct Agent {
    pub name: String,
    pub gossip: SocketAddr,
    /// Shoal's HTTP API or Serf's RPC address.
    pub api: SocketAddr,
    pub process: ChildGuard,
}

/// What an agent says about one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Alive,
    Failed,
    Other,
}

impl System {
    pub fn name(&self) -> &'static str {
        match self {
            System::Shoal {
                serf_intervals: false,
                ..
            } => "shoal",
            System::Shoal {
                serf_intervals: true,
                ..
            } => "shoal-serf-intervals",
            System::Serf { .. } => "serf",
        }
    }

    /// Agent `index` gets its own loopback address, `127.<system>.<hi>.<lo>`.
    pub fn ip(&self, index: usize) -> IpAddr {
        let system = match self {
            System::Shoal {
                serf_intervals: false,
                ..
            } => 10,
            System::Shoal {
                serf_intervals: true,
                ..
            } => 30,
            System::Serf { .. } => 20,
        };
        IpAddr::V4(Ipv4Addr::new(
            127,
            system,
            (index / 250) as u8,
            (index % 250 + 1) as u8,
        ))
    }

    /// Starts agent `index`, joining through `seed` when given. Logs go to
    /// `work/<name>.log`; Shoal's data dir is `work/<name>`.
    pub fn spawn(&self, index: usize, seed: Option<SocketAddr>, work: &Path) -> Result<Agent> {
        self.spawn_with(index, seed, work, &[])
    }

    /// [`System::spawn`] with `extra` arguments after the usual ones (a
    /// repeated flag overrides: the fault runs add an advertised address
    /// and Serf's `-log-level=info`).
    pub fn spawn_with(
        &self,
        index: usize,
        seed: Option<SocketAddr>,
        work: &Path,
        extra: &[String],
    ) -> Result<Agent> {
        let name = format!("{}-{index}", self.name());
        let ip = self.ip(index);
        let gossip = SocketAddr::new(ip, 7946);
        let (api, command) = match self {
            System::Shoal {
                bin,
                serf_intervals,
            } => {
                let api = SocketAddr::new(ip, 8500);
                let data_dir = work.join(&name);
                std::fs::create_dir_all(&data_dir)?;
                let mut command = Command::new(bin);
                command
                    .arg("agent")
                    .args(["--node", &name])
                    .args(["--bind", &gossip.to_string()])
                    .args(["--http-addr", &api.to_string()])
                    // Each agent with its own DNS interface, as in production.
                    .args(["--dns-addr", &SocketAddr::new(ip, 8600).to_string()])
                    .arg("--data-dir")
                    .arg(&data_dir)
                    .args(["--log-level", "warn"])
                    .env_remove("RUST_LOG");
                for key in ["SHOAL_CONFIG", "SHOAL_JOIN", "SHOAL_TAGS", "SHOAL_CLUSTER"] {
                    command.env_remove(key);
                }
                if let Some(seed) = seed {
                    command.args(["--join", &seed.to_string()]);
                }
                if *serf_intervals {
                    let config = work.join(format!("{name}.toml"));
                    std::fs::write(
                        &config,
                        "[gossip]\npush_pull_interval = \"30s\"\nsuspicion_mult = 4\n",
                    )?;
                    command.arg("--config").arg(&config);
                }
                (api, command)
            }
            System::Serf { bin } => {
                let api = SocketAddr::new(ip, 7373);
                let mut command = Command::new(bin);
                command
                    .arg("agent")
                    .arg(format!("-node={name}"))
                    .arg(format!("-bind={gossip}"))
                    .arg(format!("-rpc-addr={api}"))
                    .arg("-log-level=warn");
                if let Some(seed) = seed {
                    command.arg(format!("-join={seed}"));
                }
                (api, command)
            }
        };
        let mut command = command;
        command.args(extra);
        let process = ChildGuard::spawn(&name, command, &log_path(work, &name))?;
        Ok(Agent {
            name,
            gossip,
            api,
            process,
        })
    }

    pub fn client(&self, agent: &Agent) -> Client {
        match self {
            System::Shoal { .. } => Client::Shoal(HttpClient::new(agent.api)),
            System::Serf { .. } => Client::Serf(agent.api, None),
        }
    }
}

/// Where [`System::spawn`] sends agent `name`'s log.
pub fn log_path(work: &Path, name: &str) -> PathBuf {
    work.join(format!("{name}.log"))
}

/// How long agent `name`'s log is now (0 when there is none).
pub fn log_len(work: &Path, name: &str) -> u64 {
    std::fs::metadata(log_path(work, name)).map_or(0, |m| m.len())
}

/// Agent `name`'s log from byte `offset` on.
pub fn read_log_from(work: &Path, name: &str, offset: u64) -> String {
    let bytes = std::fs::read(log_path(work, name)).unwrap_or_default();
    String::from_utf8_lossy(bytes.get(offset as usize..).unwrap_or_default()).into_owned()
}

/// A connection to one agent's API.
pub enum Client {
    Shoal(HttpClient),
    Serf(SocketAddr, Option<SerfRpc>),
}

/// Name of the service (Shoal) or the value of the `bench` tag (Serf) that
/// propagation round `round` sets.
pub fn change_label(round: usize) -> String {
    format!("bench-r{round}")
}

impl Client {
    async fn serf(&mut self) -> Result<&mut SerfRpc> {
        let Client::Serf(addr, rpc) = self else {
            unreachable!("serf client")
        };
        if rpc.is_none() {
            *rpc = Some(SerfRpc::connect(*addr).await?);
        }
        Ok(rpc.as_mut().expect("connected above"))
    }

    /// Drops the Serf connection after a failed call, so the next reconnects.
    fn reset_on_error<T>(&mut self, result: &Result<T>) {
        if let (Err(_), Client::Serf(_, rpc)) = (result, self) {
            *rpc = None;
        }
    }

    /// How many members this agent lists alive. With `compact`, Shoal's
    /// `GET /health` (`alive_members`: a few hundred bytes whatever the
    /// cluster's size, where the full view is ~300 bytes a member);
    /// otherwise, and for Serf, its membership view.
    pub async fn alive_count(&mut self, compact: bool) -> Result<usize> {
        if let (true, Client::Shoal(http)) = (compact, &mut *self) {
            let body = http.get("/health").await?.json()?;
            return body["alive_members"]
                .as_u64()
                .map(|n| n as usize)
                .context("no alive_members in /health");
        }
        let members = self.members().await?;
        Ok(members
            .iter()
            .filter(|(_, status)| *status == Status::Alive)
            .count())
    }

    /// Whether this agent lists `name` as failed. With `compact`, Shoal's
    /// `GET /v1/health/node/<name>`: its `serfHealth` check is critical
    /// exactly when the member's status is failed (`catalog.rs`);
    /// otherwise, and for Serf, its membership view.
    pub async fn lists_failed(&mut self, name: &str, compact: bool) -> Result<bool> {
        if let (true, Client::Shoal(http)) = (compact, &mut *self) {
            let body = http.get(&format!("/v1/health/node/{name}")).await?.json()?;
            return Ok(body.as_array().is_some_and(|checks| {
                checks
                    .iter()
                    .any(|c| c["CheckID"] == "serfHealth" && c["Status"] == "critical")
            }));
        }
        let members = self.members().await?;
        Ok(members
            .iter()
            .any(|(member, status)| member == name && *status == Status::Failed))
    }

    /// The agent's membership view: `(name, status)` of every member.
    pub async fn members(&mut self) -> Result<Vec<(String, Status)>> {
        match self {
            Client::Shoal(http) => {
                let body = http.get("/v1/agent/members").await?.body;
                // Only the two fields: at 1,000 members the answer is
                // ~300 KB, and building a `serde_json::Value` of it for
                // every poll of every agent would make the harness the
                // busiest process on the machine.
                let members: Vec<ShoalMember> =
                    serde_json::from_slice(&body).context("members is not an array")?;
                Ok(members
                    .into_iter()
                    .map(|m| {
                        let status = match m.status {
                            1 => Status::Alive,
                            4 => Status::Failed,
                            _ => Status::Other,
                        };
                        (m.name, status)
                    })
                    .collect())
            }
            Client::Serf(..) => {
                let members = self.serf().await?.members().await;
                self.reset_on_error(&members);
                let members = members?;
                Ok(members
                    .into_iter()
                    .map(|m| {
                        let status = match m.status.as_str() {
                            "alive" => Status::Alive,
                            "failed" => Status::Failed,
                            _ => Status::Other,
                        };
                        (m.name, status)
                    })
                    .collect())
            }
        }
    }

    /// Makes round `round`'s change on this agent: Shoal registers service
    /// `bench-rN`, Serf sets tag `bench=bench-rN` (what `serf tags -set` does).
    pub async fn make_change(&mut self, round: usize) -> Result<()> {
        let label = change_label(round);
        match self {
            Client::Shoal(http) => {
                let body = serde_json::json!({ "Name": label, "ID": label, "Port": 9000 + round });
                let response = http
                    .request(
                        Method::PUT,
                        "/v1/agent/service/register",
                        Bytes::from(body.to_string()),
                        // Latency counts from before this request, so a
                        // slow answer only makes the figure larger.
                        Duration::from_secs(30),
                    )
                    .await?;
                anyhow::ensure!(
                    response.status.is_success(),
                    "register answered {}",
                    response.status
                );
                Ok(())
            }
            Client::Serf(..) => {
                let result = self.serf().await?.set_tags(&[("bench", &label)]).await;
                self.reset_on_error(&result);
                result
            }
        }
    }

    /// One poll: has this agent seen round `round`'s change made on `origin`?
    /// Shoal: `GET /v1/health/service/bench-rN?passing` is non-empty; Serf:
    /// `members-filtered` by name `origin` and tag `bench` is non-empty.
    pub async fn poll_change(&mut self, origin: &str, round: usize) -> Result<bool> {
        let label = change_label(round);
        match self {
            Client::Shoal(http) => {
                let body = http
                    .get(&format!("/v1/health/service/{label}?passing"))
                    .await?
                    .json()?;
                Ok(body.as_array().is_some_and(|a| !a.is_empty()))
            }
            Client::Serf(..) => {
                let found = self
                    .serf()
                    .await?
                    .members_filtered(origin, &[("bench", &label)])
                    .await;
                self.reset_on_error(&found);
                Ok(!found?.is_empty())
            }
        }
    }

    /// Shoal only: a blocking query on `/v1/health/service/bench-rN?passing`.
    /// Returns the new `X-Consul-Index` and whether the answer is non-empty.
    pub async fn block_change(
        &mut self,
        round: usize,
        index: u64,
        wait: Duration,
    ) -> Result<(u64, bool)> {
        let Client::Shoal(http) = self else {
            anyhow::bail!("blocking queries are Shoal's")
        };
        let label = change_label(round);
        let path = if index == 0 {
            format!("/v1/health/service/{label}?passing")
        } else {
            format!(
                "/v1/health/service/{label}?passing&index={index}&wait={}ms",
                wait.as_millis()
            )
        };
        let response = http
            .request(
                Method::GET,
                &path,
                Bytes::new(),
                wait + Duration::from_secs(5),
            )
            .await?;
        let seen = response.json()?.as_array().is_some_and(|a| !a.is_empty());
        Ok((response.consul_index(), seen))
    }

    /// Shoal only: the agent's own gossip counters `(bytes_out, datagrams_out)`.
    pub async fn gossip_counters(&mut self) -> Option<(u64, u64)> {
        let Client::Shoal(http) = self else {
            return None;
        };
        let body = http.get("/v1/agent/self").await.ok()?.json().ok()?;
        let gossip = &body["Stats"]["gossip"];
        Some((
            gossip["bytes_out"].as_u64()?,
            gossip["datagrams_out"].as_u64()?,
        ))
    }
}

/// The fields of a `/v1/agent/members` entry the harness reads.
#[derive(serde::Deserialize)]
struct ShoalMember {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Status")]
    status: u64,
}
