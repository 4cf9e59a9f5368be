//! A client for the Serf agent's RPC protocol (what `serf members` and
//! `serf tags` speak): MessagePack values over TCP, a request header
//! `{Command, Seq}` plus an optional body, a response header `{Seq, Error}`
//! plus an optional body. Talking RPC directly instead of running the
//! `serf` CLI keeps a Go process start out of every poll.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::msgpack::{self, Value, map, str};

pub struct SerfRpc {
    stream: TcpStream,
    buffer: Vec<u8>,
    seq: i64,
}

/// What the bench needs of a Serf member.
#[derive(Clone, Debug)]
pub struct SerfMember {
    pub name: String,
    pub status: String,
}

/// Above Serf's own 5 s broadcast timeout (`SetTags`, user events): with
/// the harness's timeout equal to it, a Serf that took its full time
/// looked like a harness failure ("Serf failed at 250").
const TIMEOUT: Duration = Duration::from_secs(15);

impl SerfRpc {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        stream.set_nodelay(true)?;
        let mut rpc = Self {
            stream,
            buffer: Vec::new(),
            seq: 0,
        };
        rpc.call("handshake", Some(map([("Version", Value::Int(1))])), false)
            .await?;
        Ok(rpc)
    }

    /// Sends a command and returns its body (`Nil` when `has_body` is false).
    async fn call(&mut self, command: &str, body: Option<Value>, has_body: bool) -> Result<Value> {
        let exchange = async {
            let seq = self.seq;
            self.seq += 1;
            let mut out = Vec::new();
            msgpack::encode(
                &map([("Command", str(command)), ("Seq", Value::Int(seq))]),
                &mut out,
            );
            if let Some(body) = &body {
                msgpack::encode(body, &mut out);
            }
            self.stream.write_all(&out).await?;
            let header = self.read_value().await?;
            if let Some(error) = header
                .get("Error")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty())
            {
                bail!("serf rpc {command}: {error}");
            }
            if has_body {
                self.read_value().await
            } else {
                Ok(Value::Nil)
            }
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .context("serf rpc timed out")?
    }

    async fn read_value(&mut self) -> Result<Value> {
        loop {
            if let Some((value, used)) = msgpack::decode(&self.buffer)? {
                self.buffer.drain(..used);
                return Ok(value);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("serf rpc: connection closed");
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// The agent's full membership view.
    pub async fn members(&mut self) -> Result<Vec<SerfMember>> {
        let body = self.call("members", None, true).await?;
        Ok(parse_members(&body))
    }

    /// Members matching a name and tag values (Serf matches anchored regular
    /// expressions on its side, so the answer stays small).
    pub async fn members_filtered(
        &mut self,
        name: &str,
        tags: &[(&str, &str)],
    ) -> Result<Vec<SerfMember>> {
        let filter = map([
            ("Tags", map(tags.iter().map(|(k, v)| (*k, str(v))))),
            ("Status", str("")),
            ("Name", str(name)),
        ]);
        let body = self.call("members-filtered", Some(filter), true).await?;
        Ok(parse_members(&body))
    }

    /// Sets tags on this agent (`serf tags -set k=v`).
    pub async fn set_tags(&mut self, tags: &[(&str, &str)]) -> Result<()> {
        let request = map([
            ("Tags", map(tags.iter().map(|(k, v)| (*k, str(v))))),
            ("DeleteTags", Value::Array(Vec::new())),
        ]);
        self.call("tags", Some(request), false).await?;
        Ok(())
    }
}

fn parse_members(body: &Value) -> Vec<SerfMember> {
    body.get("Members")
        .map(Value::as_array)
        .unwrap_or(&[])
        .iter()
        .map(|member| SerfMember {
            name: member
                .get("Name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            status: member
                .get("Status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        })
        .collect()
}
