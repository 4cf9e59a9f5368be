//! Lookups forwarded between datacenters: the two messages of one
//! forwarded read, over TCP, in envelopes of kind
//! [`crate::envelope::PayloadKind::Forward`] sealed for the WAN pool.
//!
//! A LAN agent asked for another datacenter (`?dc=dc2`) sends a
//! [`ForwardRequest`] to a WAN member of its own datacenter (`hops` 0),
//! which sends it on to a live WAN member of the target (`hops` 1); that
//! one answers from its own catalog and KV, as its HTTP API would, and
//! the [`ForwardResponse`] goes back the same way. Only reads travel:
//! each datacenter owns its data, and no agent writes another's.

use bincode::{Decode, Encode};

/// Largest request frame accepted, envelope included: a URI, a token and
/// a datacenter name, or a DNS question (at most 512 bytes over UDP,
/// 64 KiB over TCP, but a question is a name and a type).
pub const MAX_REQUEST: usize = 16 * 1024;
/// Most hops a request takes: from a LAN agent to a WAN member of its
/// datacenter, then to a WAN member of the target. A WAN member never
/// forwards a request that already took a hop, so a request can't loop.
pub const MAX_HOPS: u8 = 1;

/// One read for another datacenter.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ForwardRequest {
    /// The datacenter that answers.
    pub datacenter: String,
    pub query: ForwardQuery,
    /// How many WAN members it went through already.
    pub hops: u8,
}

/// What is asked.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ForwardQuery {
    /// An HTTP read, answered as the target's HTTP API answers it.
    Http {
        /// Its path and query (`/v1/health/service/web?passing&dc=dc2`).
        path: String,
        /// The caller's ACL token, checked by the agent that answers.
        token: Option<String>,
    },
    /// A DNS question (`web.service.dc2.consul`), answered as the
    /// target's DNS interface answers it: the answer's body is the reply.
    Dns {
        packet: Vec<u8>,
        /// The caller asked over TCP (no UDP size limit on the reply).
        tcp: bool,
    },
}

/// The answer, as the answering agent's HTTP API gave it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ForwardResponse {
    pub status: u16,
    /// The headers a Consul client reads (`Content-Type`, `X-Consul-*`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ForwardResponse {
    /// An answer that says why no agent of the target gave one.
    pub fn error(status: u16, message: &str) -> Self {
        let body = format!("{{\"error\":{}}}", json_string(message));
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into_bytes(),
        }
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn messages_round_trip() {
        for query in [
            ForwardQuery::Http {
                path: "/v1/health/service/web?passing&dc=dc2".into(),
                token: Some("s3cret".into()),
            },
            ForwardQuery::Dns {
                packet: vec![0, 1, 2, 3],
                tcp: true,
            },
        ] {
            let request = ForwardRequest {
                datacenter: "dc2".into(),
                query,
                hops: 1,
            };
            let decoded: ForwardRequest = codec::decode_frame(&codec::encode(&request)).unwrap();
            assert_eq!(decoded, request);
        }
        let response = ForwardResponse::error(503, "no live WAN member of \"dc2\"\n");
        let decoded: ForwardResponse = codec::decode_frame(&codec::encode(&response)).unwrap();
        assert_eq!(decoded, response);
        assert_eq!(
            String::from_utf8(response.body).unwrap(),
            r#"{"error":"no live WAN member of \"dc2\"\u000a"}"#
        );
    }
}
