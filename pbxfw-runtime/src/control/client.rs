//! The caller's side of the control socket: connect, call with a timeout. A failure comes
//! back as the very [`Error`] the daemon's procedure returned, so that every front end maps
//! it as it maps its own (the command line to its exit code, the C API to its result code,
//! Python to an exception); the socket's own failures are [`Error::Denied`] and
//! [`Error::Unavailable`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::wire::{self, Call, Response};
use crate::error::{Error, Result};

/// The longest answer read (a status with 100,000 bans is about 15 MB).
pub const MAX_ANSWER: usize = 256 << 20;

/// The longest a call may wait (a day); longer timeouts are cut to it.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// A connection to the daemon's control socket. A call that timed out leaves the connection
/// in the middle of an answer: the next call connects again.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    timeout: Duration,
    broken: bool,
}

fn open(path: &Path) -> Result<(BufReader<UnixStream>, UnixStream)> {
    let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => Error::Denied(format!(
            "{}: {e} (the caller must be in the socket's group, pbxfw)",
            path.display()
        )),
        _ => Error::Unavailable(format!(
            "{}: {e} (is `pbxfw daemon` running?)",
            path.display()
        )),
    })?;
    let writer = stream
        .try_clone()
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    Ok((BufReader::new(stream), writer))
}

impl Client {
    /// Connect to the socket at `path`; each call waits at most `timeout` for its answer.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Client> {
        let path = path.as_ref().to_path_buf();
        let (reader, writer) = open(&path)?;
        Ok(Client {
            path,
            reader,
            writer,
            next_id: 1,
            timeout: timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT),
            broken: false,
        })
    }

    /// Connect to the default socket ([`super::socket_path`]).
    pub fn connect_default(timeout: Duration) -> Result<Client> {
        Client::connect(super::socket_path(), timeout)
    }

    /// The socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How long each call waits.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Change how long each call waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout.clamp(Duration::from_millis(1), MAX_TIMEOUT);
    }

    /// Make `call` and return its result.
    pub fn call(&mut self, call: &Call) -> Result<Value> {
        if self.broken {
            (self.reader, self.writer) = open(&self.path)?;
            self.broken = false;
        }
        let id = self.next_id;
        self.next_id += 1;
        let result = self.exchange(&wire::encode_request(&Value::from(id), call), id);
        if matches!(result, Err(Error::Unavailable(_))) {
            self.broken = true;
        }
        result
    }

    /// Make a call given as a method name and its parameters (JSON), as the C API and other
    /// languages do; checked as the daemon checks it before anything is sent.
    pub fn call_method(&mut self, method: &str, params: Value) -> Result<Value> {
        let params = match params {
            Value::Null => Value::Object(Default::default()),
            p => p,
        };
        let call: Call =
            serde_json::from_value(serde_json::json!({"method": method, "params": params}))
                .map_err(|e| Error::Usage(format!("{method}: {e}")))?;
        self.call(&call)
    }

    fn exchange(&mut self, line: &str, id: u64) -> Result<Value> {
        let deadline = Instant::now() + self.timeout;
        let secs = self.timeout.as_secs_f64();
        let late = move || {
            Error::Unavailable(format!(
                "no answer within {secs:.1} s (the daemon may still carry the request out)"
            ))
        };
        let shown = self.path.display().to_string();
        let io = move |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                late()
            } else {
                Error::Unavailable(format!("{shown}: {e}"))
            }
        };
        let _ = self.writer.set_write_timeout(Some(self.timeout));
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        if let Err(e) = self.writer.write_all(&bytes) {
            // The daemon may have refused the connection and said why before closing it.
            if let Some(answer) = self.pending_refusal() {
                return Err(answer);
            }
            return Err(io(e));
        }
        loop {
            let mut answer = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(late());
                }
                let _ = self.reader.get_ref().set_read_timeout(Some(left));
                let n = (&mut self.reader)
                    .take((MAX_ANSWER - answer.len()) as u64 + 1)
                    .read_until(b'\n', &mut answer)
                    .map_err(&io)?;
                if n == 0 {
                    return Err(Error::Unavailable(
                        "the daemon closed the connection without an answer".into(),
                    ));
                }
                if answer.ends_with(b"\n") {
                    break;
                }
                if answer.len() > MAX_ANSWER {
                    return Err(Error::Unavailable(format!(
                        "an answer longer than {MAX_ANSWER} bytes"
                    )));
                }
            }
            let r: Response = serde_json::from_slice(&answer).map_err(|e| {
                Error::Unavailable(format!("an answer that is not the protocol's: {e}"))
            })?;
            // An answer with no id is about the connection (refused, too slow, too long).
            if r.id != Value::Null && r.id != id {
                continue;
            }
            return match (r.ok, r.result, r.error) {
                (true, Some(v), _) => Ok(v),
                (false, _, Some(e)) => Err(e.into_error()),
                _ => Err(Error::Unavailable(
                    "an answer with neither result nor error".into(),
                )),
            };
        }
    }

    /// A refusal the daemon sent when the connection was made, if there is one to read now.
    fn pending_refusal(&mut self) -> Option<Error> {
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)));
        let mut line = Vec::new();
        (&mut self.reader)
            .take(64 << 10)
            .read_until(b'\n', &mut line)
            .ok()?;
        let r: Response = serde_json::from_slice(&line).ok()?;
        r.error.map(wire::WireError::into_error)
    }
}
