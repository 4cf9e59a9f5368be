//! HTTP probes: 2xx passing, 429 warning, anything else critical (Consul's
//! rules). HTTP/1, plain or over TLS (`https://`, see [`super::tls`]).

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::definition::HttpTls;
use super::{OUTPUT_LIMIT, ProbeResult, error_chain, tls};

/// One HTTP check's client and request, built once and sent every run.
pub struct HttpProbe {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: String,
    /// The name the server's certificate must hold (`https://` only).
    tls_name: String,
    method: String,
    headers: BTreeMap<String, Vec<String>>,
    body: Bytes,
}

impl HttpProbe {
    /// A probe for a parsed HTTP check (URL, method and headers were
    /// validated by the parser; a bad one here becomes a critical result).
    pub fn new(
        url: &str,
        method: &str,
        headers: &BTreeMap<String, Vec<String>>,
        body: &str,
        tls: &HttpTls,
        timeout: Duration,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        // The TLS layer takes `https://`; plain `http://` passes through.
        http.enforce_http(false);
        let uri: Option<hyper::Uri> = url.parse().ok();
        let https = uri.as_ref().and_then(|uri| uri.scheme_str()) == Some("https");
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls::client_config(https, tls.skip_verify))
            .https_or_http();
        // The parser checked the name; one that fails here is verified
        // against the URL's host instead (and so fails loudly).
        let fixed_name = tls
            .server_name
            .as_deref()
            .and_then(|name| tls::server_name(name).ok());
        let builder = match fixed_name {
            Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            None => builder,
        };
        let connector = builder.enable_http1().wrap_connector(http);
        // No idle connections: a check should see what a new client sees,
        // and an idle pool would keep a socket open per check (Consul also
        // disables keep-alive for its checks).
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        let tls_name = match &tls.server_name {
            Some(name) => name.clone(),
            None => uri
                .as_ref()
                .and_then(|uri| uri.host())
                .unwrap_or_default()
                .to_string(),
        };
        Self {
            client,
            url: url.to_string(),
            tls_name,
            method: method.to_string(),
            headers: headers.clone(),
            body: Bytes::from(body.to_string()),
        }
    }

    /// Sends the request once. The caller bounds it with the timeout.
    pub async fn run(&self) -> ProbeResult {
        let request = match self.request() {
            Ok(request) => request,
            Err(error) => {
                return ProbeResult::critical(format!(
                    "HTTP {} {}: invalid request: {error}",
                    self.method, self.url
                ));
            }
        };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(error) => {
                let why = tls::explain(&error, &self.tls_name)
                    .map(|explained| format!("{explained} ({})", error_chain(&error)))
                    .unwrap_or_else(|| error_chain(&error));
                return ProbeResult::critical(format!("HTTP {} {}: {why}", self.method, self.url));
            }
        };
        let status = response.status();
        let body = read_prefix(response.into_body(), OUTPUT_LIMIT).await;
        let output = format!(
            "HTTP {} {}: {} {} Output: {body}",
            self.method,
            self.url,
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        ProbeResult::new(status_of(status), output)
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
        let mut builder = Request::builder()
            .method(Method::from_bytes(self.method.as_bytes())?)
            .uri(&self.url);
        for (name, values) in &self.headers {
            for value in values {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        let headers = builder.headers_mut().expect("no error so far");
        set_default(headers, USER_AGENT, "Shoal Health Check");
        set_default(headers, ACCEPT, "text/plain, text/*, */*");
        builder.body(Full::new(self.body.clone()))
    }
}

/// Consul's mapping from HTTP status to check status.
pub fn status_of(status: StatusCode) -> super::CheckStatus {
    use super::CheckStatus;
    if status.is_success() {
        CheckStatus::Passing
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        CheckStatus::Warning
    } else {
        CheckStatus::Critical
    }
}

fn set_default(headers: &mut hyper::HeaderMap, name: HeaderName, value: &'static str) {
    if !headers.contains_key(&name) {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// Reads at most `limit` bytes of the body and drops the rest unread: a
/// health endpoint that streams forever must not hold the check.
pub(crate) async fn read_prefix(mut body: hyper::body::Incoming, limit: usize) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Some(Err(error)) => {
                bytes.extend_from_slice(format!(" (body cut: {error})").as_bytes());
                break;
            }
            None => break,
        }
    }
    bytes.truncate(limit);
    String::from_utf8_lossy(&bytes).into_owned()
}
