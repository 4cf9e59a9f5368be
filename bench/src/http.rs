//! A keep-alive HTTP/1.1 client over one connection (hyper's low-level
//! `conn` API): the pollers, the blocking-query watchers and the load
//! generator each own one, so a measurement never waits for a pool.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("response body is not JSON")
    }

    /// `X-Consul-Index`, 0 when absent.
    pub fn consul_index(&self) -> u64 {
        self.headers
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

pub struct HttpClient {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpClient {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, sender: None }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(self.addr),
            )
            .await
            .context("connect timed out")??;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::task::spawn_local(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("connected above"))
    }

    /// Sends one request; `timeout` bounds the whole exchange.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response> {
        let addr = self.addr;
        let exchange = async {
            let sender = self.connect().await?;
            sender.ready().await?;
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header("host", addr.to_string())
                .body(Full::new(body))?;
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => {
                self.sender = None;
                Err(error.context(format!("{addr}{path}")))
            }
            Err(_) => {
                self.sender = None;
                bail!("{addr}{path}: no answer within {timeout:?}")
            }
        }
    }

    pub async fn get(&mut self, path: &str) -> Result<Response> {
        self.request(Method::GET, path, Bytes::new(), Duration::from_secs(5))
            .await
    }

    /// Waits up to 30 s for a Shoal agent's API to answer.
    pub async fn wait_serving(&mut self) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.get("/v1/agent/self").await.is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{}: the agent's API never answered",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Registers an instance of `web` (port 8080) on the agent.
    pub async fn register_web(&mut self) -> Result<()> {
        let answer = self
            .request(
                Method::PUT,
                "/v1/agent/service/register",
                Bytes::from_static(br#"{"Name": "web", "Port": 8080}"#),
                Duration::from_secs(5),
            )
            .await?;
        anyhow::ensure!(
            answer.status == 200,
            "{}: register web: {}",
            self.addr,
            answer.status
        );
        Ok(())
    }
}
