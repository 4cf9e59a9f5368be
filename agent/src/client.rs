//! A small blocking HTTP client for the CLI, talking to the local agent.

use std::time::Duration;

use serde_json::Value;

/// Why a CLI command could not get its answer from the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the shoal agent at {base}: {reason} (is `shoal agent` running? set --http-addr or SHOAL_HTTP_ADDR)"
    )]
    Unreachable { base: String, reason: String },
    #[error("the agent answered {status} to {method} {path}: {message}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
        /// `X-Consul-Index` of the answer, when it had one.
        index: Option<u64>,
    },
    #[error("the agent's answer to {path} is not valid JSON: {reason}")]
    BadBody { path: String, reason: String },
}

pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// Sent as `X-Consul-Token` with every request, when set.
    token: Option<String>,
}

impl Client {
    /// `http_addr` is `host:port` or a full `http://host:port` URL.
    pub fn new(http_addr: &str) -> Self {
        let trimmed = http_addr.trim().trim_end_matches('/');
        let base = if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
            trimmed.to_string()
        } else {
            format!("http://{trimmed}")
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(15)))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base,
            agent,
            token: None,
        }
    }

    /// Sends `token` (the agent's `[acl] token`) with every request; an
    /// empty one counts as none.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|token| !token.trim().is_empty());
        self
    }

    /// `request` with the token, if any.
    fn request<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("X-Consul-Token", token.trim()),
            None => request,
        }
    }

    pub fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        self.get_json_with_index(path).map(|(_, body)| body)
    }

    /// GET with the answer's `X-Consul-Index` (0 when absent).
    pub fn get_json_with_index(&self, path: &str) -> Result<(u64, Value), ClientError> {
        let response = self
            .request(self.agent.get(&format!("{}{path}", self.base)))
            .call()
            .map_err(|error| self.unreachable(error))?;
        let index = index_of(&response).unwrap_or(0);
        Ok((index, self.read("GET", path, response)?))
    }

    /// GET a body that is not JSON (the Prometheus text format).
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let mut response = self
            .request(self.agent.get(&format!("{}{path}", self.base)))
            .call()
            .map_err(|error| self.unreachable(error))?;
        if !response.status().is_success() {
            return self.read("GET", path, response).map(|_| String::new());
        }
        response
            .body_mut()
            .read_to_string()
            .map_err(|error| self.unreachable(error))
    }

    /// GET a body that streams until the agent ends it (`shoal monitor`):
    /// no overall timeout; an error status is read as any other.
    pub fn get_stream(&self, path: &str) -> Result<impl std::io::Read + use<>, ClientError> {
        let response = self
            .request(self.agent.get(&format!("{}{path}", self.base)))
            .config()
            .timeout_global(None)
            .build()
            .call()
            .map_err(|error| self.unreachable(error))?;
        if !response.status().is_success() {
            self.read("GET", path, response)?;
            unreachable!("read refuses a status that is not a success");
        }
        Ok(response.into_body().into_reader())
    }

    pub fn put_bytes(&self, path: &str, body: &[u8]) -> Result<Value, ClientError> {
        let response = self
            .request(self.agent.put(&format!("{}{path}", self.base)))
            .send(body)
            .map_err(|error| self.unreachable(error))?;
        self.read("PUT", path, response)
    }

    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        let response = self
            .request(self.agent.delete(&format!("{}{path}", self.base)))
            .call()
            .map_err(|error| self.unreachable(error))?;
        self.read("DELETE", path, response)
    }

    pub fn put(&self, path: &str) -> Result<Value, ClientError> {
        let response = self
            .request(self.agent.put(&format!("{}{path}", self.base)))
            .send_empty()
            .map_err(|error| self.unreachable(error))?;
        self.read("PUT", path, response)
    }

    /// `method` (`POST`, `PUT` or `DELETE`) with a JSON body.
    pub fn send_json(
        &self,
        method: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let bytes = body.to_string();
        let request = match method {
            "POST" => self.agent.post(&url),
            "PUT" => self.agent.put(&url),
            _ => self.agent.delete(&url).force_send_body(),
        };
        let response = self
            .request(request)
            .header("Content-Type", "application/json")
            .send(bytes.as_bytes())
            .map_err(|error| self.unreachable(error))?;
        self.read(method, path, response)
    }

    pub fn put_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let response = self
            .request(self.agent.put(&format!("{}{path}", self.base)))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|error| self.unreachable(error))?;
        self.read("PUT", path, response)
    }

    fn unreachable(&self, error: ureq::Error) -> ClientError {
        let reason = match &error {
            ureq::Error::Io(io) => io.to_string(),
            other => other.to_string(),
        };
        ClientError::Unreachable {
            base: self.base.clone(),
            reason,
        }
    }

    fn read(
        &self,
        method: &'static str,
        path: &str,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<Value, ClientError> {
        let status = response.status().as_u16();
        let index = index_of(&response);
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|error| self.unreachable(error))?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|body| {
                    body.get("error")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or(text);
            return Err(ClientError::Status {
                method,
                path: path.to_string(),
                status,
                message,
                index,
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|error| ClientError::BadBody {
            path: path.to_string(),
            reason: error.to_string(),
        })
    }
}

fn index_of(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    response
        .headers()
        .get("X-Consul-Index")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse().ok())
}
