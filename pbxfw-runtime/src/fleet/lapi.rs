//! The HTTP half of the fleet: CrowdSec's Local API as a bouncer (API key) and as a machine
//! (login, JWT) sees it (docs/fleet.md, "Protocol").
//!
//! The client is `ureq` with `rustls`: blocking calls fit the daemon's threads (one puller,
//! one pusher) without an async runtime, rustls needs no system OpenSSL, and certificates are
//! verified by default against the public roots or the policy's `fleet.ca_file`.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use pbxfw_core::Prefix;

/// What went wrong talking to the LAPI.
#[derive(Debug, thiserror::Error)]
pub enum LapiError {
    /// No answer (connection refused, timeout, TLS failure, DNS).
    #[error("{url}: {detail}")]
    Transport {
        /// The endpoint.
        url: String,
        /// Why.
        detail: String,
    },
    /// An HTTP error status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// An answer that is not what the API sends.
    #[error("{url}: {detail}")]
    Answer {
        /// The endpoint.
        url: String,
        /// Why.
        detail: String,
    },
    /// The TLS configuration cannot be built.
    #[error("fleet.ca_file {path}: {detail}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
}

impl LapiError {
    /// The HTTP status, if the LAPI answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            LapiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A LAPI endpoint with its HTTP agent.
#[derive(Clone)]
pub struct Lapi {
    agent: ureq::Agent,
    base: String,
    user_agent: String,
    max_body: u64,
}

/// A machine's session token.
#[derive(Debug, Clone)]
pub struct Token {
    /// The JWT.
    pub token: String,
    /// The expiry the LAPI announced (RFC 3339), for logs.
    pub expire: String,
}

impl Lapi {
    /// A client of the LAPI at `base` (`https://host:port`, no trailing slash), requests
    /// bounded by `timeout`, answers by `max_body` bytes.
    pub fn new(
        base: &str,
        ca_file: Option<&str>,
        timeout: Duration,
        max_body: u64,
    ) -> Result<Lapi, LapiError> {
        let mut b = ureq::AgentBuilder::new()
            .timeout_connect(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            // Never follow a redirect: the key would be sent wherever a server says.
            .redirects(0)
            .max_idle_connections_per_host(2);
        b = b.tls_config(Arc::new(tls_config(ca_file)?));
        Ok(Lapi {
            agent: b.build(),
            base: base.trim_end_matches('/').to_string(),
            user_agent: format!("pbxfw/{}", env!("CARGO_PKG_VERSION")),
            max_body,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn call(&self, req: ureq::Request, body: Option<&str>) -> Result<String, LapiError> {
        let url = req.url().to_string();
        let req = req.set("User-Agent", &self.user_agent);
        let res = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        match res {
            Ok(r) => self.read(r, &url),
            Err(ureq::Error::Status(status, r)) => {
                let body = self.read(r, &url).unwrap_or_default();
                Err(LapiError::Status {
                    url,
                    status,
                    body: clip(&body, 200),
                })
            }
            Err(ureq::Error::Transport(t)) => Err(LapiError::Transport {
                url,
                detail: t.to_string(),
            }),
        }
    }

    /// The body, at most `max_body` bytes: a server cannot make the daemon grow without bound.
    fn read(&self, r: ureq::Response, url: &str) -> Result<String, LapiError> {
        let mut body = String::new();
        let mut reader = r.into_reader().take(self.max_body + 1);
        reader
            .read_to_string(&mut body)
            .map_err(|e| LapiError::Transport {
                url: url.into(),
                detail: format!("reading the answer: {e}"),
            })?;
        if body.len() as u64 > self.max_body {
            return Err(LapiError::Answer {
                url: url.into(),
                detail: format!(
                    "the answer is larger than {} bytes (fleet.max_decisions bounds it)",
                    self.max_body
                ),
            });
        }
        Ok(body)
    }

    /// `GET /v1/decisions/stream` as a bouncer: every active decision (`startup`), or those
    /// since this key's last pull. The body, to be read by [`pbxfw_core::parse_stream`].
    pub fn stream(&self, key: &str, startup: bool) -> Result<String, LapiError> {
        let path = if startup {
            "/v1/decisions/stream?startup=true"
        } else {
            "/v1/decisions/stream"
        };
        self.call(self.agent.get(&self.url(path)).set("X-Api-Key", key), None)
    }

    /// `POST /v1/watchers/login` as a machine.
    pub fn login(
        &self,
        machine: &str,
        password: &str,
        scenarios: &[&str],
    ) -> Result<Token, LapiError> {
        let url = self.url("/v1/watchers/login");
        let body = serde_json::json!({
            "machine_id": machine,
            "password": password,
            "scenarios": scenarios,
        })
        .to_string();
        let text = self.call(self.agent.post(&url), Some(&body))?;
        #[derive(serde::Deserialize)]
        struct Answer {
            token: String,
            #[serde(default)]
            expire: String,
        }
        let a: Answer = serde_json::from_str(&text).map_err(|e| LapiError::Answer {
            url: url.clone(),
            detail: format!("not a login answer: {e}"),
        })?;
        if a.token.is_empty() || a.token.len() > 8192 || !a.token.is_ascii() {
            return Err(LapiError::Answer {
                url,
                detail: "the token is empty or malformed".into(),
            });
        }
        Ok(Token {
            token: a.token,
            expire: clip(&a.expire, 64),
        })
    }

    /// `POST /v1/alerts` as a machine: `alerts` is the JSON array.
    pub fn post_alerts(&self, token: &Token, alerts: &str) -> Result<(), LapiError> {
        self.call(
            self.agent
                .post(&self.url("/v1/alerts"))
                .set("Authorization", &format!("Bearer {}", token.token)),
            Some(alerts),
        )
        .map(|_| ())
    }

    /// `DELETE /v1/decisions?ip=…` (or `range=…`) as a machine: every machine's decisions on
    /// the source end. Returns how many the LAPI deleted.
    pub fn delete_decisions(&self, token: &Token, prefix: &Prefix) -> Result<u64, LapiError> {
        let query = if prefix.is_host() {
            format!("ip={}", prefix.addr())
        } else {
            format!("range={prefix}")
        };
        let url = self.url(&format!(
            "/v1/decisions?{}",
            query.replace('/', "%2F").replace(':', "%3A")
        ));
        let text = self.call(
            self.agent
                .delete(&url)
                .set("Authorization", &format!("Bearer {}", token.token)),
            None,
        )?;
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(rename = "nbDeleted", default)]
            nb_deleted: String,
        }
        Ok(serde_json::from_str::<Answer>(&text)
            .ok()
            .and_then(|a| a.nb_deleted.parse().ok())
            .unwrap_or(0))
    }

    /// `GET /v1/heartbeat` as a machine.
    pub fn heartbeat(&self, token: &Token) -> Result<(), LapiError> {
        self.call(
            self.agent
                .get(&self.url("/v1/heartbeat"))
                .set("Authorization", &format!("Bearer {}", token.token)),
            None,
        )
        .map(|_| ())
    }
}

/// rustls with certificate verification: the public roots (webpki-roots), or only the CAs of
/// `ca_file` (a fleet's private LAPI).
fn tls_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig, LapiError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let err = |detail: String| LapiError::Ca {
                path: path.into(),
                detail,
            };
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| err(e.to_string()))?;
            for c in certs {
                let c = c.map_err(|e| err(e.to_string()))?;
                roots.add(c).map_err(|e| err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(err("holds no certificate".into()));
            }
        }
    }
    // ring rather than aws-lc-rs: no cmake or C toolchain beyond cc to build it. rustls marks
    // it deprecated for lacking post-quantum key exchange, which a LAPI (Go's TLS) would
    // offer; classical ECDHE stays sound for what the fleet carries.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LapiError::Ca {
            path: ca_file.unwrap_or("-").into(),
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The start of `s`, at most `n` bytes, on a character boundary, without control characters.
pub fn clip(s: &str, n: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .scan(0usize, |len, c| {
            *len += c.len_utf8();
            (*len <= n).then_some(c)
        })
        .collect()
}
