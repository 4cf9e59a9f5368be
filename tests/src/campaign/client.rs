//! HTTP for the campaign: every call has a short timeout (an agent may be
//! frozen with SIGSTOP), and a failed call says whether the request surely
//! never reached the agent (connection refused) or might have.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// Why a call got no HTTP answer.
#[derive(Clone, Debug)]
pub enum CallError {
    /// The connection was refused: the agent never saw the request.
    NotSent(String),
    /// Timeout, reset, ...: the agent may or may not have acted on it.
    Unknown(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSent(text) => write!(f, "not sent: {text}"),
            CallError::Unknown(text) => write!(f, "no answer: {text}"),
        }
    }
}

/// One request; the status and the body (JSON when it parses, else the
/// text as a JSON string).
pub fn call(
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, Value), CallError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let response = match (method, body) {
        ("GET", _) => agent.get(&url).call(),
        ("DELETE", Some(body)) => agent.delete(&url).force_send_body().send(body),
        ("DELETE", None) => agent.delete(&url).call(),
        ("PUT", Some(body)) => agent.put(&url).send(body),
        ("PUT", None) => agent.put(&url).send_empty(),
        ("POST", Some(body)) => agent.post(&url).send(body),
        ("POST", None) => agent.post(&url).send_empty(),
        _ => return Err(CallError::NotSent(format!("unsupported method {method}"))),
    };
    let mut response = response.map_err(classify)?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|error| CallError::Unknown(error.to_string()))?;
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, value))
}

fn classify(error: ureq::Error) -> CallError {
    match &error {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            CallError::NotSent(error.to_string())
        }
        _ => CallError::Unknown(error.to_string()),
    }
}

/// Decodes standard base64 (as `/v1/kv` returns values); `None` if invalid.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(byte: u8) -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut group = 0u32;
        for (i, &byte) in chunk.iter().enumerate() {
            group |= sextet(byte)? << (18 - 6 * i);
        }
        let produced = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        for i in 0..produced {
            out.push((group >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn decodes_padded_and_unpadded_base64() {
        assert_eq!(base64_decode("b3AtMTI=").unwrap(), b"op-12");
        assert_eq!(base64_decode("b3AtMTIz").unwrap(), b"op-123");
        assert_eq!(base64_decode("b3AtMQ==").unwrap(), b"op-1");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("b3A*").is_none());
    }
}
