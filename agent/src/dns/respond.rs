//! One query in, one reply out: reads the packet, answers from the latest
//! snapshot, encodes, truncates for UDP, counts. Synchronous and quick: it
//! never waits (forwarding is the caller's, see [`Outcome::Forward`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use shoal_protocol::MemberView;
use tokio::sync::watch;

use super::DnsCounters;
use super::answer::{Answer, Context, Entry};
use super::names::{Lookup, Placed, place, reverse_ip};
use super::skipped::SkippedServices;
use crate::config::DnsConfig;
use crate::core_counters::CoreCounters;
use crate::snapshot::Snapshot;

/// Largest UDP payload we offer or accept (EDNS), as most servers do.
const MAX_UDP_PAYLOAD: u16 = 4096;
/// A UDP answer without EDNS fits this (RFC 1035).
const CLASSIC_UDP_PAYLOAD: usize = 512;
/// A TCP message's length is 16 bits.
const MAX_TCP_MESSAGE: usize = u16::MAX as usize;

/// How the query arrived: decides the size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a packet.
pub enum Outcome {
    Reply(Vec<u8>),
    /// A name outside our domains with recursors configured: send the
    /// query to them ([`super::forward`]).
    Forward(Vec<u8>),
    /// A name in another datacenter (`web.service.dc2.consul`) on an agent
    /// of a federated datacenter (one with a WAN member): send the query
    /// there through the WAN pool ([`super::forward::to_datacenter`]).
    Datacenter {
        datacenter: String,
        query: Vec<u8>,
    },
    /// A service our datacenter has no instance of, with `dns.failover`
    /// set (on an agent of a federated datacenter): ask those datacenters
    /// in order, and answer `local` when none has one
    /// ([`super::forward::failover`]).
    Failover {
        datacenters: Vec<String>,
        query: Vec<u8>,
        local: Vec<u8>,
    },
    /// Not a query we answer at all (too short to have a header, or a
    /// response): nothing is sent back.
    Drop,
}

/// Answers queries; shared by the UDP loop and every TCP connection.
pub struct Responder {
    pub config: Arc<DnsConfig>,
    /// Our datacenter, for names of nodes without one.
    pub datacenter: String,
    pub snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    /// The core loop's counters, for the network coordinates
    /// (`dns.near_first`).
    pub status_rx: watch::Receiver<Arc<CoreCounters>>,
    pub counters: Arc<DnsCounters>,
    /// Services with names DNS can't serve, logged once each.
    pub skipped: SkippedServices,
    /// Sends questions about other datacenters there; `None`: they are
    /// answered from our own catalog (with nothing).
    pub forwarder: Option<Arc<crate::wan::Forwarder>>,
}

impl Responder {
    /// A responder over a fixed catalog, `members` (the first is this
    /// agent, whose datacenter is ours), with no agent running: for the
    /// fuzz target (`crate::fuzzing`) and the tests.
    pub fn over_members(config: DnsConfig, members: Vec<MemberView>) -> Responder {
        let local = members[0].record.clone().expect("the local record");
        let datacenter = local.datacenter.clone();
        let snapshot = Snapshot {
            index: 1,
            cluster_index: 1,
            kv_index: 1,
            local,
            members: Arc::new(members),
            kv: Default::default(),
            checks_loaded: true,
            name_rival: None,
            events: Arc::default(),
            event_index: 0,
        };
        // The sender may go: a receiver keeps the last value.
        let (_, snapshot_rx) = watch::channel(Arc::new(snapshot));
        let (_, status_rx) = watch::channel(Arc::default());
        Responder {
            config: Arc::new(config),
            datacenter,
            snapshot_rx,
            status_rx,
            counters: Arc::default(),
            skipped: Default::default(),
            forwarder: None,
        }
    }

    /// Reads `packet`, sent by `client`, and decides the reply.
    pub fn respond(&self, packet: &[u8], transport: Transport, client: IpAddr) -> Outcome {
        let started = Instant::now();
        if !self.config.allows(client) {
            // Outside `dns.allow_clients`: REFUSED for a query, nothing
            // for anything else, and never forwarded.
            return match Message::from_vec(packet) {
                Ok(request) if request.message_type() == MessageType::Query => {
                    DnsCounters::add(&self.counters.client_refused);
                    self.finish(self.error(&request, ResponseCode::Refused), started)
                }
                _ => self.malformed(),
            };
        }
        let request = match Message::from_vec(packet) {
            Ok(request) if request.message_type() == MessageType::Query => request,
            Ok(_) => return self.malformed(),
            Err(_) if packet.len() < Header::len() => return self.malformed(),
            Err(_) => {
                self.counters
                    .malformed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let id = u16::from_be_bytes([packet[0], packet[1]]);
                let reply = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                return self.finish(reply, started);
            }
        };
        if request.op_code() != OpCode::Query {
            return self.finish(self.error(&request, ResponseCode::NotImp), started);
        }
        let [query] = request.queries() else {
            self.counters
                .malformed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return self.finish(self.error(&request, ResponseCode::FormErr), started);
        };
        self.counters.count_question(query.query_type());

        let mut domains = vec![self.config.domain.as_str()];
        domains.extend(self.config.alt_domain.as_deref());
        let qname = query.name().to_ascii();
        let placed = place(&qname, &domains);
        if matches!(placed, Placed::Ours { .. }) && !self.config.serves_catalog() {
            DnsCounters::add(&self.counters.protected_refused);
            return self.finish(self.error(&request, ResponseCode::Refused), started);
        }
        if let Placed::Ours { lookup, .. } = &placed
            && let Some(datacenter) = lookup.datacenter()
            && !datacenter.eq_ignore_ascii_case(&self.datacenter)
            && self
                .forwarder
                .as_ref()
                .is_some_and(|forwarder| forwarder.federated())
        {
            return Outcome::Datacenter {
                datacenter: datacenter.to_ascii_lowercase(),
                query: packet.to_vec(),
            };
        }
        let snapshot = self.snapshot_rx.borrow().clone();
        let near = self
            .config
            .near_first
            .then(|| self.status_rx.borrow().coordinates.near("_agent"))
            .flatten();
        let context = |domain| Context {
            config: &self.config,
            datacenter: &self.datacenter,
            members: &snapshot.members,
            domain,
            skipped: &self.skipped,
            near: near.as_ref(),
        };
        // A service named without a datacenter: ours, or (none here) the
        // failover's.
        let local_service = matches!(
            &placed,
            Placed::Ours {
                lookup: Lookup::Service {
                    datacenter: None,
                    ..
                },
                ..
            }
        );
        let answer = match placed {
            Placed::Ours { domain, lookup } => {
                context(domain).answer(query.name(), query.query_type(), &lookup)
            }
            Placed::Outside => {
                // A reverse name of one of our nodes or services is
                // answered (PTR, as Consul); any other outside name is
                // forwarded, or refused without recursors.
                let reverse = reverse_ip(&qname)
                    .filter(|_| self.config.serves_catalog())
                    .and_then(|ip| {
                        context(self.config.domain.as_str()).reverse(
                            query.name(),
                            query.query_type(),
                            ip,
                        )
                    });
                match reverse {
                    Some(answer) => answer,
                    None if !self.config.recursors.is_empty() => {
                        self.counters
                            .forwarded
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Outcome::Forward(packet.to_vec());
                    }
                    None => {
                        return self.finish(self.error(&request, ResponseCode::Refused), started);
                    }
                }
            }
        };
        let limit = match transport {
            Transport::Tcp => MAX_TCP_MESSAGE,
            Transport::Udp => udp_limit(&request),
        };
        let answer_limit = match transport {
            Transport::Udp if self.config.udp_answer_limit > 0 => self.config.udp_answer_limit,
            _ => usize::MAX,
        };
        let code = answer.code;
        let fails_over = answer.entries.is_empty()
            && !self.config.failover.is_empty()
            && local_service
            && self
                .forwarder
                .as_ref()
                .is_some_and(|forwarder| forwarder.federated());
        let encoded = self.reply(&request, answer, limit, answer_limit);
        self.counters.count_reply(code, started.elapsed());
        match encoded {
            Some(local) if fails_over => Outcome::Failover {
                datacenters: self.config.failover.clone(),
                query: packet.to_vec(),
                local,
            },
            Some(reply) => Outcome::Reply(reply),
            None => Outcome::Drop,
        }
    }

    /// An empty reply to `packet` with TC set: what a UDP client past
    /// `dns.rate_limit` gets instead of its answer (it retries over TCP).
    /// `None` when `packet` is not a query.
    pub fn truncated_empty(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let request = Message::from_vec(packet).ok()?;
        if request.message_type() != MessageType::Query {
            return None;
        }
        let mut reply = self.header_for(&request, ResponseCode::NoError);
        reply.set_truncated(true);
        reply.to_vec().ok()
    }

    fn malformed(&self) -> Outcome {
        self.counters
            .malformed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Outcome::Drop
    }

    /// A reply to `request` with its id, question and flags, no records.
    fn header_for(&self, request: &Message, code: ResponseCode) -> Message {
        let mut reply = Message::new();
        reply
            .set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(request.op_code())
            .set_recursion_desired(request.recursion_desired())
            .set_recursion_available(!self.config.recursors.is_empty())
            .set_response_code(code);
        reply.add_queries(request.queries().iter().cloned());
        if request.extensions().as_ref().is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD);
            reply.set_edns(edns);
        }
        reply
    }

    fn error(&self, request: &Message, code: ResponseCode) -> Message {
        self.header_for(request, code)
    }

    /// The answer, encoded within `limit` bytes and `answer_limit` records:
    /// SRV targets' addresses are left out first (they are extras), then
    /// answers from the end, with TC set. `None` if it can't be encoded.
    fn reply(
        &self,
        request: &Message,
        answer: Answer,
        limit: usize,
        answer_limit: usize,
    ) -> Option<Vec<u8>> {
        let Answer {
            code,
            mut entries,
            authority,
        } = answer;
        entries.truncate(answer_limit);
        let mut reply = self.header_for(request, code);
        reply.set_authoritative(true);
        reply.insert_name_servers(authority);
        let build = |count: usize, extras: bool| {
            let mut message = reply.clone();
            fill(&mut message, &entries[..count], extras);
            message
        };
        // The common case, everything fits, is encoded once.
        let all = build(entries.len(), true).to_vec().ok()?;
        if all.len() <= limit {
            return Some(all);
        }
        let without_extras = build(entries.len(), false).to_vec().ok()?;
        if without_extras.len() <= limit {
            return Some(without_extras);
        }
        // The most answers that fit, found by bisection.
        let (mut fits, mut too_many) = (0, entries.len());
        while too_many - fits > 1 {
            let middle = (fits + too_many) / 2;
            if encoded_len(&build(middle, false)) <= limit {
                fits = middle;
            } else {
                too_many = middle;
            }
        }
        let mut truncated = build(fits, false);
        truncated.set_truncated(true);
        self.counters
            .truncated
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        truncated.to_vec().ok()
    }

    fn finish(&self, reply: Message, started: Instant) -> Outcome {
        self.counters
            .count_reply(reply.response_code(), started.elapsed());
        match reply.to_vec() {
            Ok(bytes) => Outcome::Reply(bytes),
            Err(error) => {
                tracing::debug!(%error, "cannot encode a DNS reply");
                Outcome::Drop
            }
        }
    }
}

/// The size a UDP reply may have: 512 bytes, or what the client's EDNS
/// says (up to [`MAX_UDP_PAYLOAD`]).
fn udp_limit(request: &Message) -> usize {
    match request.extensions().as_ref() {
        Some(edns) => usize::from(edns.max_payload().min(MAX_UDP_PAYLOAD)).max(CLASSIC_UDP_PAYLOAD),
        None => CLASSIC_UDP_PAYLOAD,
    }
}

fn fill(message: &mut Message, entries: &[Entry], extras: bool) {
    message.add_answers(entries.iter().map(|entry| entry.record.clone()));
    if extras {
        let mut seen: Vec<&Record> = Vec::new();
        for extra in entries.iter().filter_map(|entry| entry.additional.as_ref()) {
            if !seen.iter().any(|known| known.name() == extra.name()) {
                seen.push(extra);
            }
        }
        message.add_additionals(seen.into_iter().cloned());
    }
}

fn encoded_len(message: &Message) -> usize {
    message
        .to_vec()
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX)
}

/// A SERVFAIL for `packet` (when no recursor answered it).
pub fn servfail(packet: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    let mut reply = Message::error_msg(request.id(), request.op_code(), ResponseCode::ServFail);
    reply.set_recursion_desired(request.recursion_desired());
    reply.add_queries(request.queries().iter().cloned());
    reply.to_vec().ok()
}

#[cfg(test)]
#[path = "respond_tests.rs"]
mod tests;
