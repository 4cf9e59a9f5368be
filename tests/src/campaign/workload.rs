//! The campaign's clients: threads that send KV writes, deletes, CAS and
//! reads, flag changes, service registrations with TTL checks,
//! deregistrations and TTL passes to random agents, and record every
//! answer. Half the reads go to the key and agent of the client's last KV
//! write, so read-your-writes is checked often ([`super::reads`]).
//!
//! Keys overlap on purpose: every worker writes the same few keys through
//! every agent. `camp/p<n>` only ever get puts and CAS (they must exist at
//! the end); `camp/d<n>` also get deletes. The keys in use slide with time
//! (`key_window`): each key is written for about 20 s and then left
//! alone, so keys end in states decided at every stage of the fault
//! schedule (mid-partition, just after a kill, ...), not only in the
//! quiet last seconds before the heal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::{CallError, base64_decode, call};
use super::history::{History, Observed, Op, OpKind, Outcome};
use super::rng::Rng;
use super::{AGENTS, Shared};

/// A key's number changes every this long ...
const KEY_STEP: Duration = Duration::from_secs(4);
/// ... and this many consecutive numbers are in use at once.
const KEYS_IN_USE: u64 = 5;

/// A key in use at `now`: `camp/d<n>` (gets deletes) or `camp/p<n>`.
fn key_window(rng: &mut Rng, now: Duration, deletable: bool) -> String {
    let first = now.as_secs() / KEY_STEP.as_secs();
    let n = first + rng.range(0, KEYS_IN_USE);
    format!("camp/{}{n}", if deletable { 'd' } else { 'p' })
}
/// Feature flags the workers change.
pub const FLAGS: [&str; 2] = ["camp-f0", "camp-f1"];
/// Service slots per agent: `s<agent>-<slot>`, named after the slot.
pub const SERVICE_NAMES: [&str; 3] = ["api", "web", "db"];
/// The KV prefix of flags (`agent/src/flags.rs`).
pub const FLAG_PREFIX: &str = "_shoal/flags/";

/// How long a client waits for an answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The catalog target of a service slot, as [`Op::target`] names it.
pub fn service_target(agent: usize, slot: usize) -> String {
    format!("service:node-{agent}/s{agent}-{slot}")
}

/// Starts `count` workers; they stop when `shared.stop_workers` is set.
pub fn spawn_workers(
    count: usize,
    seed: u64,
    addrs: Vec<SocketAddr>,
    history: Arc<History>,
    shared: Arc<Shared>,
) -> Vec<JoinHandle<()>> {
    (0..count)
        .map(|worker| {
            let mut client = Worker {
                worker,
                rng: Rng::derive(seed, 100 + worker as u64),
                addrs: addrs.clone(),
                history: history.clone(),
                last_write: None,
            };
            let shared = shared.clone();
            std::thread::spawn(move || {
                while !shared.stop_workers.load(Ordering::Relaxed) {
                    client.one_operation();
                    let pause = client.rng.millis(30, 250);
                    std::thread::sleep(pause);
                }
            })
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Action {
    Put,
    Cas,
    Delete,
    FlagPut,
    FlagDelete,
    Register,
    Deregister,
    TtlPass,
    Get,
}

struct Worker {
    worker: usize,
    rng: Rng,
    addrs: Vec<SocketAddr>,
    history: Arc<History>,
    /// `(agent, key)` of this client's last KV write.
    last_write: Option<(usize, String)>,
}

/// What a KV read saw: `Some(marker)` for 200, `None` for 404; `Err` for
/// any other answer.
fn read_value(result: &Result<(u16, Value), CallError>) -> Result<Option<String>, ()> {
    match result {
        Ok((200, body)) => {
            let encoded = body[0]["Value"].as_str().unwrap_or_default();
            let bytes = base64_decode(encoded).ok_or(())?;
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        Ok((404, _)) => Ok(None),
        _ => Err(()),
    }
}

/// What an answer says: 200 with `true` (or without a boolean body where
/// the endpoint has none) is applied; `false`, a 4xx or a refused
/// connection is not; anything else may or may not have happened.
fn judge(result: &Result<(u16, Value), CallError>) -> Outcome {
    match result {
        Ok((200, Value::Bool(false))) => Outcome::NotApplied,
        Ok((200, _)) => Outcome::Applied,
        Ok((status, _)) if (400..500).contains(status) => Outcome::NotApplied,
        Ok(_) => Outcome::Unknown,
        Err(CallError::NotSent(_)) => Outcome::NotApplied,
        Err(CallError::Unknown(_)) => Outcome::Unknown,
    }
}

fn answer_text(result: &Result<(u16, Value), CallError>) -> String {
    let mut text = match result {
        Ok((status, body)) => format!("{status} {body}"),
        Err(error) => error.to_string(),
    };
    text.truncate(200);
    text
}

impl Worker {
    fn one_operation(&mut self) {
        let action = self.rng.weighted(&[
            (28, Action::Put),
            (14, Action::Cas),
            (12, Action::Delete),
            (8, Action::FlagPut),
            (3, Action::FlagDelete),
            (12, Action::Register),
            (6, Action::Deregister),
            (17, Action::TtlPass),
            (25, Action::Get),
        ]);
        let agent = self.rng.index(AGENTS);
        let id = self.history.next_id();
        let marker = format!("op-{id}");
        let now = self.history.now();
        let any_key = |rng: &mut Rng| {
            let deletable = rng.chance(60);
            key_window(rng, now, deletable)
        };
        let slot = self.rng.index(SERVICE_NAMES.len());
        match action {
            Action::Put => {
                let key = any_key(&mut self.rng);
                let path = format!("/v1/kv/{key}");
                self.send(
                    id,
                    agent,
                    OpKind::KvPut,
                    key,
                    marker.clone(),
                    "PUT",
                    path,
                    Some(marker),
                );
            }
            Action::Cas => {
                let key = any_key(&mut self.rng);
                self.cas(id, agent, key, marker);
            }
            Action::Delete => {
                let key = key_window(&mut self.rng, now, true);
                let path = format!("/v1/kv/{key}");
                self.send(
                    id,
                    agent,
                    OpKind::KvDelete,
                    key,
                    marker,
                    "DELETE",
                    path,
                    None,
                );
            }
            Action::FlagPut => {
                let flag = FLAGS[self.rng.index(FLAGS.len())];
                let body = json!({
                    "enabled": self.rng.chance(50),
                    "rollout_percentage": self.rng.range(0, 101),
                    "description": marker,
                });
                let path = format!("/v1/flags/{flag}");
                let target = format!("{FLAG_PREFIX}{flag}");
                let body = body.to_string();
                self.send(
                    id,
                    agent,
                    OpKind::FlagPut,
                    target,
                    marker,
                    "PUT",
                    path,
                    Some(body),
                );
            }
            Action::FlagDelete => {
                let flag = FLAGS[self.rng.index(FLAGS.len())];
                let path = format!("/v1/flags/{flag}");
                let target = format!("{FLAG_PREFIX}{flag}");
                self.send(
                    id,
                    agent,
                    OpKind::FlagDelete,
                    target,
                    marker,
                    "DELETE",
                    path,
                    None,
                );
            }
            Action::Register => {
                let colour = ["blue", "green"][self.rng.index(2)];
                let body = json!({
                    "ID": format!("s{agent}-{slot}"),
                    "Name": SERVICE_NAMES[slot],
                    "Port": 9000 + slot,
                    "Tags": [colour, marker],
                    "Check": {
                        "CheckID": format!("ttl-{agent}-{slot}"),
                        "TTL": "15s",
                        "Status": "passing",
                    },
                });
                let target = service_target(agent, slot);
                let path = "/v1/agent/service/register".to_string();
                let body = body.to_string();
                self.send(
                    id,
                    agent,
                    OpKind::Register,
                    target,
                    marker,
                    "PUT",
                    path,
                    Some(body),
                );
            }
            Action::Deregister => {
                let path = format!("/v1/agent/service/deregister/s{agent}-{slot}");
                let target = service_target(agent, slot);
                self.send(
                    id,
                    agent,
                    OpKind::Deregister,
                    target,
                    marker,
                    "PUT",
                    path,
                    None,
                );
            }
            Action::Get => {
                let (agent, key) = match &self.last_write {
                    Some(last) if self.rng.chance(50) => last.clone(),
                    _ => (agent, any_key(&mut self.rng)),
                };
                self.get(id, agent, key);
            }
            Action::TtlPass => {
                let path = format!("/v1/agent/check/pass/ttl-{agent}-{slot}");
                let target = service_target(agent, slot);
                self.send(
                    id,
                    agent,
                    OpKind::TtlPass,
                    target,
                    marker,
                    "PUT",
                    path,
                    None,
                );
            }
        }
    }

    /// `GET /v1/kv/key` on the agent, recorded with what it saw.
    fn get(&mut self, id: u64, agent: usize, key: String) {
        let issued = self.history.now();
        let path = format!("/v1/kv/{key}");
        let result = call("GET", self.addrs[agent], &path, None, CALL_TIMEOUT);
        let done = self.history.now();
        let observed = read_value(&result)
            .ok()
            .map(|value| Observed { value, at: done });
        self.history.record(Op {
            id,
            worker: self.worker,
            agent,
            kind: OpKind::KvGet,
            target: key,
            marker: String::new(),
            issued,
            done,
            outcome: if observed.is_some() {
                Outcome::Applied
            } else {
                Outcome::Unknown
            },
            answer: answer_text(&result),
            said_false: false,
            observed,
        });
    }

    /// Reads the key's ModifyIndex on the agent, then writes with `?cas=`.
    fn cas(&mut self, id: u64, agent: usize, key: String, marker: String) {
        let issued = self.history.now();
        let read = call(
            "GET",
            self.addrs[agent],
            &format!("/v1/kv/{key}"),
            None,
            CALL_TIMEOUT,
        );
        let observed = read_value(&read).ok().map(|value| Observed {
            value,
            at: self.history.now(),
        });
        let index = match &read {
            Ok((200, body)) => body[0]["ModifyIndex"].as_u64(),
            Ok((404, _)) => Some(0),
            _ => None,
        };
        let Some(index) = index else {
            // Nothing was written: the CAS was never sent.
            self.history.record(Op {
                id,
                worker: self.worker,
                agent,
                kind: OpKind::KvCas,
                target: key,
                marker,
                issued,
                done: self.history.now(),
                outcome: Outcome::NotApplied,
                answer: format!("not sent: reading the index failed: {}", answer_text(&read)),
                said_false: false,
                observed,
            });
            return;
        };
        let path = format!("/v1/kv/{key}?cas={index}");
        self.send_at(
            issued,
            observed,
            (id, agent, OpKind::KvCas, key, marker.clone()),
            "PUT",
            path,
            Some(marker),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        id: u64,
        agent: usize,
        kind: OpKind,
        target: String,
        marker: String,
        method: &str,
        path: String,
        body: Option<String>,
    ) {
        let issued = self.history.now();
        self.send_at(
            issued,
            None,
            (id, agent, kind, target, marker),
            method,
            path,
            body,
        );
    }

    /// Sends a write whose operation began at `issued` (a CAS: with the
    /// read of its index, which saw `observed`) and records it.
    fn send_at(
        &mut self,
        issued: std::time::Duration,
        observed: Option<Observed>,
        (id, agent, kind, target, marker): (u64, usize, OpKind, String, String),
        method: &str,
        path: String,
        body: Option<String>,
    ) {
        if kind.is_kv_write() {
            self.last_write = Some((agent, target.clone()));
        }
        let result = call(
            method,
            self.addrs[agent],
            &path,
            body.as_deref().map(str::as_bytes),
            CALL_TIMEOUT,
        );
        let done = self.history.now();
        self.history.record(Op {
            id,
            worker: self.worker,
            agent,
            kind,
            target,
            marker,
            issued,
            done,
            outcome: judge(&result),
            answer: answer_text(&result),
            said_false: matches!(result, Ok((200, Value::Bool(false)))),
            observed,
        });
    }
}
