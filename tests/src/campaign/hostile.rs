//! Hostile API load: a few threads hammering one agent's HTTP API with
//! requests that cost it the most, for a while, as a fault. The agent
//! stays *healthy* (it is not frozen or cut off): its failure detector must
//! not starve, so a failure report about it is a violation. What the API
//! answers the load (200, 400, 422, 429, 503, nothing) is counted and never
//! a violation; only the invariants are.
//!
//! - `hostile_filter`: `GET /v1/catalog/service/<name>?filter=` with a
//!   filter as long as the API takes (an 8 KiB request line): the outside
//!   audit's `ServiceName matches `\w{20}`` (a Unicode class, a large
//!   program) repeated in an `or` chain until the line is full, each
//!   compiled per request (seconds of CPU on the agents before budgets).
//! - `hostile_events`: `PUT /v1/event/fire/camp-flood` with the largest
//!   payload, back to back: each event gossips to every agent.
//! - `hostile_template`: `POST /v1/shoal/template/render` with nested
//!   loops over the catalog, until the render's fuel runs out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::client::{CallError, call};
use super::workload::SERVICE_NAMES;

/// Threads per hostile load.
const THREADS: usize = 4;
/// How long one hostile request may take before the thread gives up on it.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The API's longest request line (`agent/src/api/guard.rs`, MAX_URI),
/// less room for the path.
const URI_ROOM: usize = 8 * 1024 - 100;
/// The largest event payload (`protocol/src/event.rs`).
const EVENT_PAYLOAD: usize = 512;

/// What the API answered to hostile requests of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub sent: u64,
    /// By status (`0`: no answer within the timeout, or no connection).
    pub answers: BTreeMap<u16, u64>,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.sent += other.sent;
        for (status, n) in &other.answers {
            *self.answers.entry(*status).or_default() += n;
        }
    }

    /// `200 x12, 429 x3, none x1`.
    pub fn describe(&self) -> String {
        self.answers
            .iter()
            .map(|(status, n)| match status {
                0 => format!("none x{n}"),
                _ => format!("{status} x{n}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A running hostile load.
pub struct HostileLoad {
    pub kind: &'static str,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Tally>>,
}

impl HostileLoad {
    /// Starts `kind` (one of the `hostile_*` fault kinds) against `addr`.
    pub fn start(kind: &'static str, addr: SocketAddr) -> HostileLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..THREADS)
            .map(|thread| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    let mut n = thread as u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (method, path, body) = request(kind, n);
                        n += THREADS as u64;
                        let status = match call(method, addr, &path, Some(&body), TIMEOUT) {
                            Ok((status, _)) => status,
                            Err(CallError::NotSent(_)) => {
                                // Down (killed): don't spin on refusals.
                                std::thread::sleep(Duration::from_millis(100));
                                0
                            }
                            Err(CallError::Unknown(_)) => 0,
                        };
                        tally.sent += 1;
                        *tally.answers.entry(status).or_default() += 1;
                    }
                    tally
                })
            })
            .collect();
        HostileLoad {
            kind,
            stop,
            threads,
        }
    }

    /// Tells the threads to stop after their current request (which may
    /// take up to the timeout on a frozen agent).
    pub fn halt(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops the threads, waits for them, and returns what they were
    /// answered.
    pub fn finish(self) -> Tally {
        self.halt();
        let mut total = Tally::default();
        for thread in self.threads {
            if let Ok(tally) = thread.join() {
                total.add(&tally);
            }
        }
        total
    }
}

/// The `n`th request of a kind: method, path and body.
fn request(kind: &str, n: u64) -> (&'static str, String, Vec<u8>) {
    match kind {
        "hostile_filter" => {
            let name = SERVICE_NAMES[n as usize % SERVICE_NAMES.len()];
            let filter = heavy_filter(n);
            (
                "GET",
                format!(
                    "/v1/catalog/service/{name}?filter={}",
                    query_encode(&filter)
                ),
                Vec::new(),
            )
        }
        "hostile_events" => {
            let payload = format!("flood-{n}-").repeat(EVENT_PAYLOAD).into_bytes();
            (
                "PUT",
                "/v1/event/fire/camp-flood".to_string(),
                payload[..EVENT_PAYLOAD].to_vec(),
            )
        }
        _ => {
            let template = "{% for i in range(100000) %}{% for s in services() %}\
                            {{ s.name }}{% for t in s.tags %}{{ t | upper }}{% endfor %}\
                            {% for n in nodes() %}{{ n.name ~ n.address }}{% endfor %}\
                            {% endfor %}{% endfor %}";
            let body = serde_json::json!({ "template": template }).to_string();
            (
                "POST",
                "/v1/shoal/template/render".to_string(),
                body.into_bytes(),
            )
        }
    }
}

/// A filter that fills the request line: a term that differs per request
/// (so no cache answers it), then as many `\w{20}` regexes as fit.
pub fn heavy_filter(n: u64) -> String {
    let mut filter = format!("ServiceName == \"x{n}\"");
    let term = " or ServiceName matches `\\w{20}`";
    while query_encode(&filter).len() + query_encode(term).len() <= URI_ROOM {
        filter.push_str(term);
    }
    filter
}

/// A query-string value: spaces as `+` (the shortest form, so the most
/// terms fit), everything but RFC 3986's unreserved characters
/// percent-encoded.
fn query_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else if byte == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{URI_ROOM, heavy_filter, query_encode};

    #[test]
    fn the_heavy_filter_fills_but_does_not_overflow_the_request_line() {
        let filter = heavy_filter(7);
        let encoded = query_encode(&filter).len();
        assert!(encoded <= URI_ROOM && encoded > URI_ROOM - 100, "{encoded}");
        assert!(filter.matches("matches").count() > 150, "{filter}");
        assert_eq!(query_encode("a b\"/`"), "a+b%22%2F%60");
    }
}
