//! The fleet's two threads: the puller (the bouncer role) and the pusher (the machine role),
//! and what they send (docs/fleet.md).

use super::*;

/// The largest answer accepted from the LAPI for `max` decisions: about 140 bytes each in
/// the stream, so 1 KiB each leaves room for long scenarios, plus a megabyte.
fn max_body(max: u32) -> u64 {
    u64::from(max) * 1024 + (1 << 20)
}

/// Counters the threads keep, read by the metrics.
#[derive(Debug, Default)]
pub struct ThreadCounters {
    /// Pulls that failed.
    pub pull_errors: AtomicU64,
    /// Decisions pushed.
    pub pushed: AtomicU64,
    /// Pushes that failed (the bans stay queued).
    pub push_errors: AtomicU64,
    /// Bans dropped from a full push queue.
    pub push_dropped: AtomicU64,
    /// Decisions deleted at the LAPI by a propagated unban.
    pub unbans_sent: AtomicU64,
}

/// The fleet's threads, running.
pub struct Running {
    /// The configuration they run with.
    pub config: Fleet,
    stop: Arc<AtomicBool>,
    push: Option<SyncSender<Push>>,
    /// Their counters.
    pub counters: Arc<ThreadCounters>,
}

/// Most bans waiting to be pushed (a LAPI down for long under attack): the oldest go first.
const PUSH_QUEUE: usize = 50_000;

impl Running {
    /// Hand a ban or an unban to the pusher; never waits (a full channel drops it, counted).
    pub fn push(&self, p: Push) {
        if let Some(tx) = &self.push {
            if let Err(TrySendError::Full(_)) = tx.try_send(p) {
                self.counters.push_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether this PBX pushes its bans.
    pub fn pushes(&self) -> bool {
        self.push.is_some()
    }

    /// Stop the threads (they end at their next look, within a second).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start the fleet's threads for `config`, reporting through `deliver`. The secrets are read
/// here, so a wrong mode or a missing file fails the start with its reason.
pub fn start(
    config: &Fleet,
    deliver: impl Fn(Report) -> bool + Send + Clone + 'static,
) -> Result<Running> {
    let lapi = Lapi::new(
        &config.url,
        config.ca_file.as_deref(),
        Duration::from_secs(u64::from(config.timeout_seconds)),
        max_body(config.max_decisions),
    )
    .map_err(|e| Error::Usage(e.to_string()))?;
    let key = match (&config.api_key_file, config.pull) {
        (Some(f), true) => Some(read_secret(f)?),
        _ => None,
    };
    let machine = match (&config.machine_id, &config.password_file, config.push) {
        (Some(id), Some(f), true) => Some((id.clone(), read_secret(f)?)),
        _ => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(ThreadCounters::default());
    if let Some(key) = key {
        let (lapi, stop, counters, deliver) = (
            lapi.clone(),
            stop.clone(),
            counters.clone(),
            deliver.clone(),
        );
        let cfg = config.clone();
        std::thread::Builder::new()
            .name("fleet-pull".into())
            .spawn(move || puller(&lapi, &key, &cfg, &stop, &counters, &deliver))
            .map_err(|e| Error::io("fleet-pull thread", e))?;
    }
    let push = match machine {
        Some((id, password)) => {
            let (tx, rx) = std::sync::mpsc::sync_channel(PUSH_QUEUE);
            let (stop, counters) = (stop.clone(), counters.clone());
            let cfg = config.clone();
            std::thread::Builder::new()
                .name("fleet-push".into())
                .spawn(move || pusher(&lapi, &id, &password, &cfg, &rx, &stop, &counters, &deliver))
                .map_err(|e| Error::io("fleet-push thread", e))?;
            Some(tx)
        }
        None => None,
    };
    Ok(Running {
        config: config.clone(),
        stop,
        push,
        counters,
    })
}

/// The addresses of the host of `url` (`http[s]://HOST[:PORT]/…`), looked up when it is a
/// name; `None` when it does not resolve now.
fn lapi_addrs(url: &str) -> Option<Vec<std::net::IpAddr>> {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, p) = v6.split_once(']')?;
            (h, p.strip_prefix(':').unwrap_or("443"))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (authority, "443"),
        },
    };
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(vec![ip]);
    }
    let port: u16 = port.parse().ok()?;
    let mut v: Vec<std::net::IpAddr> = (host, port)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .collect();
    v.sort();
    v.dedup();
    Some(v)
}

/// Sleep `d` in steps, ending early when `stop` is set. Returns whether to go on.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
    !stop.load(Ordering::Relaxed)
}

/// The bouncer: a full pull first and every `resync_seconds`, the delta every
/// `poll_seconds`. It never gives up: after a failure it waits (doubling up to a minute) and
/// its next pull is a full one, since the LAPI may have moved this key's cursor past a delta
/// whose answer was lost.
fn puller(
    lapi: &Lapi,
    key: &str,
    cfg: &Fleet,
    stop: &AtomicBool,
    counters: &ThreadCounters,
    deliver: &impl Fn(Report) -> bool,
) {
    let poll = Duration::from_secs(u64::from(cfg.poll_seconds));
    let resync = Duration::from_secs(u64::from(cfg.resync_seconds));
    let mut last_full: Option<Instant> = None;
    let mut failures: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let full = last_full.is_none_or(|t| t.elapsed() >= resync);
        let started = Instant::now();
        if full {
            if let Some(addrs) = lapi_addrs(&cfg.url) {
                deliver(Report::LapiAddrs(addrs));
            }
        }
        let got = lapi.stream(key, full).and_then(|body| {
            let pull =
                pbxfw_core::parse_stream(&body, cfg.max_decisions as usize).map_err(|e| {
                    LapiError::Answer {
                        url: format!("{}/v1/decisions/stream", cfg.url),
                        detail: e.to_string(),
                    }
                })?;
            Ok((pull, body.len()))
        });
        let wait = match got {
            Ok((pull, bytes)) => {
                if failures > 0 {
                    deliver(Report::Note {
                        error: false,
                        detail: format!(
                            "fleet: the LAPI answers again after {failures} failed pull(s)"
                        ),
                    });
                }
                failures = 0;
                if full {
                    last_full = Some(started);
                }
                let alive = deliver(Report::Pulled(Pulled {
                    pull,
                    full,
                    bytes,
                    took: started.elapsed(),
                }));
                if !alive {
                    return;
                }
                poll
            }
            Err(e) => {
                counters.pull_errors.fetch_add(1, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                last_full = None;
                // The first failure and then one in ten: a LAPI down for an hour is one line
                // a minute at most, not one per poll.
                if failures == 1 || failures % 10 == 0 {
                    let hint = match e.status() {
                        Some(403) => " (the API key is wrong: cscli bouncers add NAME)",
                        _ => "",
                    };
                    deliver(Report::Note {
                        error: true,
                        detail: format!("fleet pull failed ({failures} in a row): {e}{hint}"),
                    });
                }
                (poll * 2u32.saturating_pow(failures.min(6)))
                    .min(Duration::from_secs(60))
                    .max(poll)
            }
        };
        if !nap(
            wait.saturating_sub(started.elapsed().min(wait))
                .max(Duration::from_millis(200)),
            stop,
        ) {
            return;
        }
    }
}

/// The machine: bans are gathered for a second and sent as one request (an alert per
/// scenario, each carrying its decisions); the token is renewed before it expires and on any
/// 401 (a LAPI restart invalidates every token); a heartbeat every minute. Bans that could
/// not be sent stay queued (at most [`PUSH_QUEUE`]) and go with the next batch.
#[allow(clippy::too_many_arguments)]
fn pusher(
    lapi: &Lapi,
    machine: &str,
    password: &str,
    cfg: &Fleet,
    rx: &Receiver<Push>,
    stop: &AtomicBool,
    counters: &ThreadCounters,
    deliver: &impl Fn(Report) -> bool,
) {
    let mut token: Option<(Token, Instant)> = None;
    let mut bans: VecDeque<(Prefix, u64, String, u64)> = VecDeque::new();
    let mut unbans: VecDeque<Prefix> = VecDeque::new();
    let mut last_heartbeat = Instant::now();
    let mut failures: u32 = 0;
    let mut retry_at = Instant::now();
    let scenarios = [
        "pbxfw/attack_tool",
        "pbxfw/unknown_account",
        "pbxfw/wrong_password",
        "pbxfw/failed_auth",
        "pbxfw/foreign_accounts",
        "pbxfw/kernel_tier",
        "pbxfw/manual",
    ];
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(p) => {
                let mut take = |p: Push| match p {
                    Push::Ban {
                        prefix,
                        seconds,
                        scenario,
                    } => {
                        if bans.len() >= PUSH_QUEUE {
                            bans.pop_front();
                            counters.push_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        bans.push_back((prefix, seconds, scenario, unix_now()));
                    }
                    Push::Unban(p) => {
                        if unbans.len() < PUSH_QUEUE {
                            unbans.push_back(p);
                        }
                    }
                };
                take(p);
                // Gather what comes within the second.
                let until = Instant::now() + Duration::from_secs(1);
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    match rx.recv_timeout(left) {
                        Ok(p) => take(p),
                        Err(_) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let heartbeat_due = last_heartbeat.elapsed() >= Duration::from_secs(60);
        if (bans.is_empty() && unbans.is_empty() && !heartbeat_due) || Instant::now() < retry_at {
            continue;
        }
        let result = (|| -> std::result::Result<(), LapiError> {
            let mut attempt = 0;
            loop {
                attempt += 1;
                // Tokens last an hour: renewed after 50 minutes.
                if token
                    .as_ref()
                    .is_none_or(|(_, at)| at.elapsed() >= Duration::from_secs(50 * 60))
                {
                    token = Some((lapi.login(machine, password, &scenarios)?, Instant::now()));
                }
                let t = &token.as_ref().expect("logged in").0;
                let sent =
                    send_batch(lapi, t, cfg, &mut bans, &mut unbans, counters).and_then(|()| {
                        if heartbeat_due {
                            lapi.heartbeat(t)?;
                            last_heartbeat = Instant::now();
                        }
                        Ok(())
                    });
                match sent {
                    Err(e) if e.status() == Some(401) && attempt == 1 => token = None,
                    // The LAPI refuses what was sent (a 4xx other than 401 and 429): sending
                    // it again would block the queue for good. It is dropped, counted, logged.
                    Err(e)
                        if e.status()
                            .is_some_and(|s| (400..500).contains(&s) && s != 401 && s != 429) =>
                    {
                        // Bans go first: while some wait, the refusal was theirs.
                        if bans.is_empty() {
                            unbans.pop_front();
                        } else {
                            let n = bans.len().min(MAX_PUSH_BATCH);
                            bans.drain(..n);
                            counters.push_dropped.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        return Err(e);
                    }
                    other => return other,
                }
            }
        })();
        match result {
            Ok(()) => {
                if failures > 0 {
                    deliver(Report::Note {
                        error: false,
                        detail: "fleet: pushing to the LAPI again".into(),
                    });
                }
                failures = 0;
            }
            Err(e) => {
                counters.push_errors.fetch_add(1, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                if e.status() == Some(401) {
                    token = None;
                }
                if failures == 1 || failures % 10 == 0 {
                    deliver(Report::Note {
                        error: true,
                        detail: format!(
                            "fleet push failed ({failures} in a row, {} ban(s) waiting): {e}",
                            bans.len()
                        ),
                    });
                }
                retry_at = Instant::now()
                    + Duration::from_secs(2u64.saturating_pow(failures.min(5)))
                        .min(Duration::from_secs(30));
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Most decisions in one `POST /v1/alerts`.
const MAX_PUSH_BATCH: usize = 1000;

/// Send what is queued: the bans as alerts, then the unbans. What was sent leaves the queues;
/// on an error the rest stays.
fn send_batch(
    lapi: &Lapi,
    token: &Token,
    cfg: &Fleet,
    bans: &mut VecDeque<(Prefix, u64, String, u64)>,
    unbans: &mut VecDeque<Prefix>,
    counters: &ThreadCounters,
) -> std::result::Result<(), LapiError> {
    while !bans.is_empty() {
        let n = bans.len().min(MAX_PUSH_BATCH);
        let batch: Vec<_> = bans.iter().take(n).cloned().collect();
        let body = alerts_json(&cfg.pbx, &batch);
        lapi.post_alerts(token, &body)?;
        bans.drain(..n);
        counters.pushed.fetch_add(n as u64, Ordering::Relaxed);
    }
    while let Some(p) = unbans.front() {
        let n = lapi.delete_decisions(token, p)?;
        counters.unbans_sent.fetch_add(n, Ordering::Relaxed);
        unbans.pop_front();
    }
    Ok(())
}

/// The alerts of `bans` (prefix, seconds, scenario, when): one per scenario, in decision mode
/// (pbxfw has decided: the LAPI stores the decisions as sent, origin `pbxfw`). Scopes are
/// `Ip` and `Range`, with those capitals: LAPIs before 1.6.4 store a scope as written and
/// their stream knows only these.
pub fn alerts_json(pbx: &str, bans: &[(Prefix, u64, String, u64)]) -> String {
    let mut by_scenario: BTreeMap<&str, Vec<&(Prefix, u64, String, u64)>> = BTreeMap::new();
    for b in bans {
        by_scenario.entry(b.2.as_str()).or_default().push(b);
    }
    let scope_value = |p: &Prefix| {
        if p.is_host() {
            ("Ip", p.addr().to_string())
        } else {
            ("Range", p.to_string())
        }
    };
    let alerts: Vec<serde_json::Value> = by_scenario
        .into_iter()
        .map(|(scenario, bans)| {
            let first = bans[0];
            let start = bans.iter().map(|b| b.3).min().unwrap_or(first.3);
            let stop = bans.iter().map(|b| b.3).max().unwrap_or(first.3);
            let (scope, value) = scope_value(&first.0);
            let mut source = serde_json::json!({"scope": scope, "value": value});
            source[if scope == "Ip" { "ip" } else { "range" }] = value.clone().into();
            let decisions: Vec<serde_json::Value> = bans
                .iter()
                .map(|(p, secs, _, _)| {
                    let (scope, value) = scope_value(p);
                    serde_json::json!({
                        "origin": "pbxfw",
                        "type": "ban",
                        "scope": scope,
                        "value": value,
                        "duration": format!("{}s", secs.max(&1)),
                        "scenario": scenario,
                    })
                })
                .collect();
            serde_json::json!({
                "scenario": scenario,
                "scenario_hash": "",
                "scenario_version": env!("CARGO_PKG_VERSION"),
                "message": format!("pbxfw on {pbx}: {} ban(s), {scenario}", bans.len()),
                "events_count": bans.len(),
                "start_at": crate::human::iso8601(start),
                "stop_at": crate::human::iso8601(stop),
                "capacity": 0,
                "leakspeed": "0s",
                "simulated": false,
                "remediation": true,
                "events": [],
                "meta": [
                    {"key": "service", "value": "sip"},
                    {"key": "pbx", "value": pbx},
                ],
                "source": source,
                "decisions": decisions,
            })
        })
        .collect();
    serde_json::Value::Array(alerts).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_carry_the_scopes_the_stream_knows() {
        let bans = vec![
            (
                "192.0.2.7".parse().unwrap(),
                3600,
                "pbxfw/attack_tool".to_string(),
                100,
            ),
            (
                "2001:db8:1::/64".parse().unwrap(),
                60,
                "pbxfw/attack_tool".to_string(),
                101,
            ),
            (
                "192.0.2.8".parse().unwrap(),
                0,
                "pbxfw/kernel_tier".to_string(),
                102,
            ),
        ];
        let v: serde_json::Value = serde_json::from_str(&alerts_json("pbx-a", &bans)).unwrap();
        let alerts = v.as_array().unwrap();
        assert_eq!(alerts.len(), 2, "one alert per scenario");
        let a = &alerts[0];
        assert_eq!(a["scenario"], "pbxfw/attack_tool");
        assert_eq!(
            a["source"],
            serde_json::json!({"scope": "Ip", "value": "192.0.2.7", "ip": "192.0.2.7"})
        );
        let d = a["decisions"].as_array().unwrap();
        assert_eq!(d[0]["scope"], "Ip");
        assert_eq!(d[0]["value"], "192.0.2.7");
        assert_eq!(d[0]["duration"], "3600s");
        assert_eq!(d[0]["origin"], "pbxfw");
        assert_eq!(d[1]["scope"], "Range");
        assert_eq!(d[1]["value"], "2001:db8:1::/64");
        assert_eq!(alerts[1]["decisions"][0]["duration"], "1s");
        assert_eq!(
            a["meta"][1],
            serde_json::json!({"key": "pbx", "value": "pbx-a"})
        );
        for k in [
            "scenario_hash",
            "scenario_version",
            "message",
            "events_count",
            "start_at",
            "stop_at",
            "capacity",
            "leakspeed",
            "simulated",
            "events",
        ] {
            assert!(a.get(k).is_some(), "the LAPI requires {k}");
        }
    }

    #[test]
    fn the_lapi_host_is_read_from_the_url() {
        assert_eq!(
            lapi_addrs("http://192.0.2.1:8080"),
            Some(vec!["192.0.2.1".parse().unwrap()])
        );
        assert_eq!(
            lapi_addrs("https://[2001:db8::1]:8443/x"),
            Some(vec!["2001:db8::1".parse().unwrap()])
        );
        assert_eq!(
            lapi_addrs("https://192.0.2.2"),
            Some(vec!["192.0.2.2".parse().unwrap()])
        );
        assert_eq!(lapi_addrs("nonsense"), None);
    }
}
