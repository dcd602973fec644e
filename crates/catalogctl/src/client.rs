//! A small GraphQL client over reqwest: queries and mutations over POST, subscriptions over
//! GraphQL-SSE (distinct connections).

use catalog_api::ErrorCode;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

use super::{CliError, Exit};

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Client {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Client { http, base: base.trim_end_matches('/').to_string(), token }
    }

    fn transport_error(&self, e: &reqwest::Error) -> CliError {
        let what = if e.is_timeout() { "timed out talking to" } else { "cannot reach" };
        CliError::new(Exit::Unreachable, "UNREACHABLE", format!("{what} {}: {e}", self.base))
    }

    /// Runs a query or mutation; GraphQL errors become a [`CliError`] with the right exit code.
    pub async fn run(&self, query: &str, variables: Value, timeout: Duration) -> Result<Value, CliError> {
        let mut req = self
            .http
            .post(format!("{}/graphql", self.base))
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .json(&json!({"query": query, "variables": variables}));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| {
            CliError::new(
                Exit::Failed,
                ErrorCode::Internal.as_str(),
                format!("the server answered HTTP {status} without a GraphQL body: {e}"),
            )
        })?;
        if let Some(err) = body["errors"].as_array().and_then(|e| e.first()) {
            return Err(CliError::from_graphql(err));
        }
        Ok(body["data"].clone())
    }

    /// Subscribes over SSE; calls `on_next` with each `data` value until the stream completes.
    pub async fn subscribe(
        &self,
        query: &str,
        variables: Value,
        mut on_next: impl FnMut(&Value),
    ) -> Result<(), CliError> {
        let mut req = self
            .http
            .post(format!("{}/graphql/stream", self.base))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .json(&json!({"query": query, "variables": variables}));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(match body["errors"].as_array().and_then(|e| e.first()) {
                Some(err) => CliError::from_graphql(err),
                None => CliError::new(
                    Exit::Failed,
                    ErrorCode::Internal.as_str(),
                    format!("subscription refused: HTTP {status}"),
                ),
            });
        }
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport_error(&e))?;
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let message: String = buf.drain(..end + 2).collect();
                let mut event = "";
                let mut data = String::new();
                for line in message.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                match event {
                    "next" => {
                        let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                        if let Some(err) = v["errors"].as_array().and_then(|e| e.first()) {
                            return Err(CliError::from_graphql(err));
                        }
                        on_next(&v["data"]);
                    }
                    "complete" => return Ok(()),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Installs ring as the process-wide rustls crypto provider (reqwest is built without one).
fn install_crypto_provider() {
    // Err means another provider was installed first; either way one is in place.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
