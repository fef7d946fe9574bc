//! The HAProxy router: one backend whose servers belong to stacks (members),
//! driven through HAProxy's runtime API (`stats socket ... level admin`, a
//! unix socket or a TCP address).
//!
//! - A member's weight is the sum of the weights of its servers that are in
//!   the `ready` admin state; a server in `drain` or `maint` counts 0, since it
//!   takes no new traffic. A member's new weight is split over its servers by
//!   largest remainder, so the sum reads back exactly.
//! - A change is ONE connection carrying one command group (`cmd1; cmd2; ...`),
//!   which HAProxy runs in order. The gaining members come first and a server
//!   is set `ready` before its weight, so there is no moment where every
//!   server is at 0. HAProxy has no transactions: if a command in the group
//!   fails, the ones before it stay applied; the group is built from a fresh
//!   read so that it does not fail, and the engine reads back after it.
//! - A member going to 0 is drained: `weight 0` and `state drain` in the
//!   group, then [`Router::wait_applied`] polls `show stat` until its servers'
//!   current sessions (`scur`) reach 0 and puts them in `maint`. When the drain
//!   deadline (`--drain-timeout`) passes first, the servers stay in `drain`
//!   (no new traffic either) and a warning says so; the shift goes on.
//! - A member coming back from 0 gets `state ready` before its weight.
//! - After every change the output of `show servers state` is written to the
//!   server-state file (atomically), so that HAProxy started with
//!   `server-state-file` and `load-server-state-from-file global` keeps the
//!   runtime weights across a reload.
//!
//! The lease is a lock file (by default beside the server-state file) holding
//! one encoded [`Lease`]: created with `O_EXCL`, replaced only when it has
//! expired or is this deployment's own, and every check-and-replace runs
//! under an exclusive `flock` of a guard file beside it, held for the few
//! milliseconds it takes (a killed process drops it). It serializes the
//! deployments that run on the same host (where HAProxy reads its
//! server-state file); runs on other hosts driving the same HAProxy over TCP
//! must share that file system, or they are not kept apart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use nix::fcntl::{Flock, FlockArg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Applied, Group, Lease, LeaseRequest, Router, TrafficError};
use crate::aws::ProviderError;
use crate::state::Weights;
use crate::wait::progress::short;
use crate::wait::{self, Backoff, WaitEnd};

/// Admin-state bits of `show servers state` that take a server out of the
/// load balancing: forced, inherited, configured, resolver and hostname
/// maintenance, and forced or inherited drain.
const NOT_READY: u32 = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x20 | 0x40;
/// Forced maintenance (`state maint`).
const FORCED_MAINT: u32 = 0x01;
/// The maintenance bits alone.
const MAINT: u32 = 0x01 | 0x02 | 0x04 | 0x20 | 0x40;
/// The highest weight HAProxy accepts.
pub const MAX_WEIGHT: u32 = 256;

/// Where the runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl Endpoint {
    /// Parses `--haproxy-socket`: `/path/to/socket`, `unix:/path` or `tcp:HOST:PORT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(addr) = text.strip_prefix("tcp:") {
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| format!("--haproxy-socket {text:?}: expected tcp:HOST:PORT"))?;
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(format!(
                    "--haproxy-socket {text:?}: expected tcp:HOST:PORT with a port 1-65535"
                ));
            }
            return Ok(Self::Tcp(addr.to_owned()));
        }
        let path = text.strip_prefix("unix:").unwrap_or(text);
        if path.is_empty() {
            return Err("--haproxy-socket must not be empty".to_owned());
        }
        Ok(Self::Unix(PathBuf::from(path)))
    }

    fn describe(&self) -> String {
        match self {
            Self::Unix(p) => p.display().to_string(),
            Self::Tcp(a) => format!("tcp:{a}"),
        }
    }
}

/// A client of HAProxy's runtime API: one connection per command group.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    endpoint: Endpoint,
    timeout: Duration,
}

fn api_error(operation: &'static str, message: String) -> TrafficError {
    TrafficError::Provider(ProviderError {
        operation,
        code: None,
        message,
    })
}

impl RuntimeApi {
    /// A client of the API at `endpoint`; each exchange must end within `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        Self { endpoint, timeout }
    }

    /// Sends `commands` as one group (`a; b; c`) on one connection and
    /// returns everything HAProxy answered.
    pub async fn send(&self, commands: &[String]) -> Result<String, TrafficError> {
        let line = format!("{}\n", commands.join("; "));
        let exchange = async {
            match &self.endpoint {
                Endpoint::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    exchange(stream, &line).await
                }
                Endpoint::Tcp(addr) => {
                    let stream = tokio::net::TcpStream::connect(addr).await?;
                    exchange(stream, &line).await
                }
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(api_error(
                "haproxy:runtime-api",
                format!(
                    "cannot talk to HAProxy's runtime API at {}: {e} (is `stats socket ... level admin` configured?)",
                    self.endpoint.describe()
                ),
            )),
            Err(_) => Err(api_error(
                "haproxy:runtime-api",
                format!(
                    "HAProxy's runtime API at {} did not answer within {}",
                    self.endpoint.describe(),
                    short(self.timeout)
                ),
            )),
        }
    }

    /// Sends commands that answer nothing on success (`set server ...`);
    /// any text in the answer is HAProxy refusing one of them.
    pub async fn set(&self, commands: &[String]) -> Result<(), TrafficError> {
        if commands.is_empty() {
            return Ok(());
        }
        let answer = self.send(commands).await?;
        let refused = answer.trim();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(api_error(
                "haproxy:set server",
                format!(
                    "HAProxy refused part of the command group `{}`: {}",
                    commands.join("; "),
                    refused.replace('\n', " ")
                ),
            ))
        }
    }
}

async fn exchange<S>(mut stream: S, line: &str) -> std::io::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(line.as_bytes()).await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// One server as `show servers state` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    /// Its name in the backend.
    pub name: String,
    /// Admin state bits (maint, drain).
    pub admin: u32,
    /// The weight set by the user (config or runtime).
    pub weight: u32,
}

impl ServerState {
    /// Whether it takes new traffic (no maint, no drain).
    pub fn ready(&self) -> bool {
        self.admin & NOT_READY == 0
    }

    /// Whether it is in maintenance.
    pub fn maint(&self) -> bool {
        self.admin & MAINT != 0
    }

    /// Its share of the traffic: its weight when ready, else 0.
    pub fn effective(&self) -> u32 {
        if self.ready() {
            self.weight
        } else {
            0
        }
    }
}

/// Parses `show servers state <backend>`: the servers of `backend`, in order.
pub fn parse_servers_state(text: &str, backend: &str) -> Result<Vec<ServerState>, String> {
    let mut columns: Vec<&str> = Vec::new();
    let mut servers = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('#') {
            columns = header.split_whitespace().collect();
            continue;
        }
        if line.is_empty() || columns.is_empty() {
            if !line.is_empty() && line != "1" {
                return Err(line.to_owned());
            }
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let get = |name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .and_then(|i| fields.get(i).copied())
        };
        if get("be_name") != Some(backend) {
            continue;
        }
        let number = |name: &str| {
            get(name)
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| format!("unreadable {name} in `{line}`"))
        };
        servers.push(ServerState {
            name: get("srv_name")
                .ok_or_else(|| format!("no srv_name in `{line}`"))?
                .to_owned(),
            admin: number("srv_admin_state")?,
            weight: number("srv_uweight")?,
        });
    }
    Ok(servers)
}

/// Parses `show stat` CSV: current sessions (`scur`) per server of `backend`.
pub fn parse_sessions(text: &str, backend: &str) -> BTreeMap<String, u64> {
    let mut columns: Vec<&str> = Vec::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("# ") {
            columns = header.split(',').collect();
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let get = |name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .and_then(|i| fields.get(i).copied())
        };
        if get("pxname") != Some(backend) {
            continue;
        }
        if let (Some(server), Some(scur)) = (get("svname"), get("scur")) {
            if server != "BACKEND" && server != "FRONTEND" {
                out.insert(server.to_owned(), scur.parse().unwrap_or(0));
            }
        }
    }
    out
}

/// Which servers make up each member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// Named: `--member blue=blue1,blue2`.
    Explicit(BTreeMap<String, Vec<String>>),
    /// Every server of the backend, grouped by its name without a trailing
    /// number and separator: `blue1`, `blue-2` and `blue` are member `blue`.
    ByName,
}

/// The member a server named `server` belongs to when members are not named:
/// the name without trailing digits and then without a trailing `-` or `_`.
pub fn member_of(server: &str) -> &str {
    let stem = server.trim_end_matches(|c: char| c.is_ascii_digit());
    let stem = stem.trim_end_matches(['-', '_']);
    if stem.is_empty() {
        server
    } else {
        stem
    }
}

/// Splits `total` over `n` servers by largest remainder: the first ones get one more.
fn split(total: u32, n: usize) -> Vec<u32> {
    let n32 = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    let (base, rest) = (total / n32, total % n32);
    (0..n32).map(|i| base + u32::from(i < rest)).collect()
}

/// An HAProxy backend's servers as a weighted group of stacks.
#[derive(Debug)]
pub struct HaproxyRouter {
    api: RuntimeApi,
    backend: String,
    members: Members,
    server_state_file: Option<PathBuf>,
    lock_file: PathBuf,
    drain_timeout: Duration,
    /// Servers and member grouping as last read.
    last: Mutex<Vec<(String, Vec<ServerState>)>>,
    /// Servers put in `drain` by the last change, awaiting `maint`.
    draining: Mutex<Vec<String>>,
}

impl HaproxyRouter {
    /// The backend `backend` behind the runtime API `api`. `lock_file` holds
    /// the lease; `server_state_file`, when given, receives `show servers
    /// state` after every change.
    pub fn new(
        api: RuntimeApi,
        backend: &str,
        members: Members,
        server_state_file: Option<PathBuf>,
        lock_file: PathBuf,
    ) -> Self {
        Self {
            api,
            backend: backend.to_owned(),
            members,
            server_state_file,
            lock_file,
            drain_timeout: Duration::from_secs(60),
            last: Mutex::new(Vec::new()),
            draining: Mutex::new(Vec::new()),
        }
    }

    /// The default lock file: beside the server-state file, else beside the
    /// unix socket; `None` for a TCP socket without a server-state file.
    pub fn default_lock_file(endpoint: &Endpoint, state_file: Option<&Path>) -> Option<PathBuf> {
        let beside = |p: &Path| {
            let mut name = p.file_name()?.to_os_string();
            name.push(".switchyard-lock");
            Some(p.with_file_name(name))
        };
        match (state_file, endpoint) {
            (Some(f), _) => beside(f),
            (None, Endpoint::Unix(s)) => beside(s),
            (None, Endpoint::Tcp(_)) => None,
        }
    }

    /// Longest wait for a drained member's sessions to end before `maint`.
    #[must_use]
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    fn server(&self, name: &str) -> String {
        format!("{}/{name}", self.backend)
    }

    async fn servers(&self) -> Result<Vec<ServerState>, TrafficError> {
        let answer = self
            .api
            .send(&[format!("show servers state {}", self.backend)])
            .await?;
        let servers = parse_servers_state(&answer, &self.backend).map_err(|e| {
            if e.contains("Can't find backend") {
                TrafficError::NoSuchRoute {
                    route: self.id(),
                    detail: format!("HAProxy has no backend {}", self.backend),
                }
            } else {
                api_error(
                    "haproxy:show servers state",
                    format!("unexpected answer: {e}"),
                )
            }
        })?;
        if servers.is_empty() {
            return Err(TrafficError::NoSuchRoute {
                route: self.id(),
                detail: format!("backend {} has no servers", self.backend),
            });
        }
        Ok(servers)
    }

    /// Groups the servers into members, refusing names that do not exist.
    fn group(
        &self,
        servers: &[ServerState],
    ) -> Result<Vec<(String, Vec<ServerState>)>, TrafficError> {
        let mut out: Vec<(String, Vec<ServerState>)> = Vec::new();
        match &self.members {
            Members::ByName => {
                for s in servers {
                    let member = member_of(&s.name);
                    match out.iter_mut().find(|(m, _)| m == member) {
                        Some((_, list)) => list.push(s.clone()),
                        None => out.push((member.to_owned(), vec![s.clone()])),
                    }
                }
            }
            Members::Explicit(map) => {
                for (member, names) in map {
                    let mut list = Vec::new();
                    for name in names {
                        let found = servers.iter().find(|s| &s.name == name).ok_or_else(|| {
                            TrafficError::NotWeighted {
                                route: self.id(),
                                detail: format!(
                                    "--member {member} names server {name:?}, which backend {} does not have; it has {}",
                                    self.backend,
                                    servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                                ),
                            }
                        })?;
                        list.push(found.clone());
                    }
                    out.push((member.clone(), list));
                }
                for s in servers {
                    if s.effective() > 0 && !map.values().flatten().any(|n| n == &s.name) {
                        tracing::warn!(
                            "server {} takes traffic but belongs to no --member; shares are computed without it",
                            self.server(&s.name)
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    fn cached(&self) -> Vec<(String, Vec<ServerState>)> {
        self.last.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The command group that sets `to`, gaining members first, and the
    /// servers it puts in drain.
    fn commands(&self, to: &Weights) -> (Vec<String>, Vec<String>) {
        self.commands_from(&self.cached(), to)
    }

    /// The servers as they will be once `weights` are set (for plans of later steps).
    fn simulated(&self, weights: &Weights) -> Vec<(String, Vec<ServerState>)> {
        self.cached()
            .into_iter()
            .map(|(member, list)| {
                let Some(&want) = weights.get(&member) else {
                    return (member, list);
                };
                let n = list.len();
                let list = list
                    .into_iter()
                    .zip(split(want, n))
                    .map(|(s, w)| ServerState {
                        admin: if want == 0 { FORCED_MAINT } else { 0 },
                        weight: w,
                        ..s
                    })
                    .collect();
                (member, list)
            })
            .collect()
    }

    fn commands_from(
        &self,
        groups: &[(String, Vec<ServerState>)],
        to: &Weights,
    ) -> (Vec<String>, Vec<String>) {
        let current = |list: &[ServerState]| list.iter().map(ServerState::effective).sum::<u32>();
        let now: Weights = groups
            .iter()
            .map(|(m, l)| (m.clone(), current(l)))
            .collect();
        let mut order: Vec<&(String, Vec<ServerState>)> = groups.iter().collect();
        // Members gaining share first, then the others: there is never a
        // moment without a ready server.
        order.sort_by_key(|(member, _)| {
            let gains = to.contains_key(member)
                && super::plan::share(to, member) > super::plan::share(&now, member);
            u8::from(!gains)
        });
        let mut commands = Vec::new();
        let mut drains = Vec::new();
        for (member, list) in order {
            let Some(&want) = to.get(member) else {
                continue;
            };
            if want == 0 {
                for s in list {
                    if s.weight != 0 {
                        commands.push(format!("set server {} weight 0", self.server(&s.name)));
                    }
                    if s.ready() {
                        commands.push(format!("set server {} state drain", self.server(&s.name)));
                        drains.push(s.name.clone());
                    } else if !s.maint() {
                        drains.push(s.name.clone());
                    }
                }
                continue;
            }
            for (s, w) in list.iter().zip(split(want, list.len())) {
                if !s.ready() {
                    commands.push(format!("set server {} state ready", self.server(&s.name)));
                }
                if s.weight != w {
                    commands.push(format!("set server {} weight {w}", self.server(&s.name)));
                }
            }
        }
        (commands, drains)
    }

    /// Writes `show servers state` (every backend) to the server-state file.
    async fn save_server_state(&self) -> Result<(), TrafficError> {
        let Some(path) = &self.server_state_file else {
            return Ok(());
        };
        let answer = self.api.send(&["show servers state".to_owned()]).await?;
        if !answer.starts_with('1') {
            return Err(api_error(
                "haproxy:show servers state",
                format!("unexpected answer: {}", answer.trim()),
            ));
        }
        write_atomically(path, answer.trim_end().as_bytes()).map_err(|e| {
            api_error(
                "haproxy:server-state-file",
                format!("cannot write the server-state file {}: {e}", path.display()),
            )
        })
    }

    /// Waits until the drained servers have no sessions (or the drain
    /// deadline), then puts those that emptied in maint.
    async fn finish_drain(
        &self,
        servers: &[String],
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<(), TrafficError> {
        let started = Instant::now();
        let until = deadline.min(started + self.drain_timeout);
        let backoff = Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(500),
        };
        let mut attempt = 0;
        let mut last_line = started;
        loop {
            let answer = self
                .api
                .send(&[format!("show stat {} 4 -1", self.backend)])
                .await?;
            let sessions = parse_sessions(&answer, &self.backend);
            let open: Vec<(&String, u64)> = servers
                .iter()
                .map(|s| (s, sessions.get(s).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect();
            if open.is_empty() {
                break;
            }
            if last_line.elapsed() >= Duration::from_secs(5) {
                last_line = Instant::now();
                tracing::info!(
                    "draining {}: {} session(s) open after {}, up to {}",
                    open.iter()
                        .map(|(s, _)| self.server(s))
                        .collect::<Vec<_>>()
                        .join(", "),
                    open.iter().map(|(_, n)| n).sum::<u64>(),
                    short(started.elapsed()),
                    short(self.drain_timeout)
                );
            }
            match wait::sleep(backoff.delay(attempt), until, cancel).await {
                Ok(()) => attempt += 1,
                Err(WaitEnd::Deadline) => {
                    tracing::warn!(
                        "{} still had {} session(s) after {}; left in drain (no new traffic), not put in maint",
                        open.iter().map(|(s, _)| self.server(s)).collect::<Vec<_>>().join(", "),
                        open.iter().map(|(_, n)| n).sum::<u64>(),
                        short(started.elapsed())
                    );
                    return Ok(());
                }
                Err(WaitEnd::Cancelled) => {
                    return Err(TrafficError::Interrupted(format!(
                        "interrupted while draining {}",
                        servers.join(", ")
                    )))
                }
            }
        }
        let maint: Vec<String> = servers
            .iter()
            .map(|s| format!("set server {} state maint", self.server(s)))
            .collect();
        self.api.set(&maint).await?;
        tracing::debug!(
            "drained {} in {}; now in maint",
            servers.join(", "),
            short(started.elapsed())
        );
        Ok(())
    }

    fn guard(&self) -> Result<Flock<fs::File>, TrafficError> {
        let mut name = self.lock_file.as_os_str().to_owned();
        name.push(".guard");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(PathBuf::from(name))
            .map_err(|e| self.lock_error(&e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| self.lock_error(&std::io::Error::from(e)))
    }

    fn lock_error(&self, e: &std::io::Error) -> TrafficError {
        api_error(
            "haproxy:lock-file",
            format!("cannot use the lock file {}: {e}", self.lock_file.display()),
        )
    }

    fn read_lock(&self) -> Result<Option<Lease>, TrafficError> {
        match fs::read_to_string(&self.lock_file) {
            Ok(text) => Ok(Lease::decode(&text)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.lock_error(&e)),
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or_else(|| Path::new(".")))?;
    tmp.write_all(bytes)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

impl Router for HaproxyRouter {
    fn kind(&self) -> &'static str {
        "haproxy"
    }

    fn resource(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::from([
            ("socket".to_owned(), self.api.endpoint.describe()),
            ("backend".to_owned(), self.backend.clone()),
        ]);
        if let Some(f) = &self.server_state_file {
            out.insert("server_state_file".to_owned(), f.display().to_string());
        }
        out
    }

    fn id(&self) -> String {
        format!("haproxy:{}/{}", self.api.endpoint.describe(), self.backend)
    }

    async fn read(&self) -> Result<Group, TrafficError> {
        let servers = self.servers().await?;
        let groups = self.group(&servers)?;
        let weights: Weights = groups
            .iter()
            .map(|(m, list)| (m.clone(), list.iter().map(ServerState::effective).sum()))
            .collect();
        if let Ok(mut last) = self.last.lock() {
            *last = groups;
        }
        Ok(Group {
            weights,
            settle: Duration::ZERO,
        })
    }

    async fn apply(&self, weights: &Weights) -> Result<Applied, TrafficError> {
        if let Some((m, w)) = weights.iter().find(|(_, w)| **w > MAX_WEIGHT) {
            return Err(api_error(
                "haproxy:set server",
                format!("weight {w} for {m} is above HAProxy's limit {MAX_WEIGHT}"),
            ));
        }
        let (commands, drains) = self.commands(weights);
        self.api.set(&commands).await?;
        if let Ok(mut d) = self.draining.lock() {
            d.clone_from(&drains);
        }
        if !commands.is_empty() {
            self.save_server_state().await?;
        }
        Ok(Applied {
            reference: None,
            in_sync: drains.is_empty(),
        })
    }

    async fn wait_applied(
        &self,
        _applied: &Applied,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<(), TrafficError> {
        let drains = self
            .draining
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        if drains.is_empty() {
            return Ok(());
        }
        self.finish_drain(&drains, deadline, cancel).await?;
        self.save_server_state().await
    }

    fn describe_change(&self, from: &Weights, to: &Weights) -> String {
        let cached = self.cached();
        let read: Weights = cached
            .iter()
            .map(|(m, l)| (m.clone(), l.iter().map(ServerState::effective).sum()))
            .collect();
        // Later steps of a plan start from the weights the earlier ones set.
        let groups = if &read == from {
            cached
        } else {
            self.simulated(from)
        };
        let (commands, drains) = self.commands_from(&groups, to);
        if commands.is_empty() && drains.is_empty() {
            return "no change (weights already set)".to_owned();
        }
        let mut text = format!("one HAProxy command group: {}", commands.join("; "));
        if !drains.is_empty() {
            let _ = write!(
                text,
                "; then wait until {} have no sessions (up to {}) and set them to maint",
                drains
                    .iter()
                    .map(|s| self.server(s))
                    .collect::<Vec<_>>()
                    .join(", "),
                short(self.drain_timeout)
            );
        }
        if let Some(f) = &self.server_state_file {
            let _ = write!(text, "; save show servers state to {}", f.display());
        }
        text
    }

    async fn acquire_lease(
        &self,
        request: &LeaseRequest,
        ours: Option<&Lease>,
    ) -> Result<Lease, TrafficError> {
        let lease = Lease::new(request);
        let _guard = self.guard()?;
        if let Some(held) = self.read_lock()? {
            if ours.is_some_and(|o| o.same_run(&held)) {
                tracing::info!(
                    "taking back this deployment's own lease {}",
                    self.lock_file.display()
                );
            } else if held.expired(Utc::now()) {
                tracing::warn!(
                    "lease {} held by {} expired at {}; taking it over",
                    self.lock_file.display(),
                    held.holder,
                    held.expires.to_rfc3339()
                );
            } else {
                return Err(TrafficError::LeaseHeld {
                    resource: self.lease_resource(),
                    holder: held.holder.clone(),
                    expires: held.expires.to_rfc3339(),
                });
            }
            write_atomically(&self.lock_file, lease.encode().as_bytes())
                .map_err(|e| self.lock_error(&e))?;
            return Ok(lease);
        }
        // O_EXCL: even a taker that does not honour the guard cannot overwrite it.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.lock_file)
            .map_err(|e| {
                if e.kind() == ErrorKind::AlreadyExists {
                    TrafficError::LeaseHeld {
                        resource: self.lease_resource(),
                        holder: "an unknown holder".to_owned(),
                        expires: "an unknown time".to_owned(),
                    }
                } else {
                    self.lock_error(&e)
                }
            })?;
        writeln!(file, "{}", lease.encode())
            .and_then(|()| file.sync_all())
            .map_err(|e| self.lock_error(&e))?;
        Ok(lease)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), TrafficError> {
        let _guard = self.guard()?;
        match self.read_lock()? {
            Some(held) if held.same_run(lease) => {
                fs::remove_file(&self.lock_file).map_err(|e| self.lock_error(&e))
            }
            Some(held) => {
                tracing::warn!(
                    "the lease {} is no longer ours ({}); left as it is",
                    self.lock_file.display(),
                    held.describe()
                );
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn leases(&self) -> Result<Vec<Lease>, TrafficError> {
        Ok(self.read_lock()?.into_iter().collect())
    }

    fn lease_resource(&self) -> String {
        format!("lock file {}", self.lock_file.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseRequest;

    const STATE: &str = "1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 app 1 blue1 127.0.0.1 2 0 45 1 0 1 0 2 0 0 0 0 - 18081 - 0 0 - - 0
3 app 2 blue2 127.0.0.1 2 0 45 1 0 1 0 2 0 0 0 0 - 18082 - 0 0 - - 0
3 app 3 green1 127.0.0.1 2 8 10 0 1 1 0 2 0 0 0 0 - 18083 - 0 0 - - 0
4 other 1 x 127.0.0.1 2 0 1 1 0 1 0 2 0 0 0 0 - 18084 - 0 0 - - 0
";

    fn router(members: Members) -> HaproxyRouter {
        HaproxyRouter::new(
            RuntimeApi::new(
                Endpoint::Unix("/nonexistent".into()),
                Duration::from_secs(1),
            ),
            "app",
            members,
            None,
            PathBuf::from("/nonexistent.lock"),
        )
    }

    #[test]
    fn servers_state_is_parsed_for_the_backend_only() {
        let servers = parse_servers_state(STATE, "app").unwrap();
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[2].name, "green1");
        assert!(!servers[2].ready(), "drain counts as not ready");
        assert_eq!(servers[2].effective(), 0);
        assert_eq!(servers[0].effective(), 45);
        assert!(parse_servers_state("Can't find backend.\n", "app").is_err());
    }

    #[test]
    fn members_group_servers_and_changes_gain_first() {
        let r = router(Members::ByName);
        let groups = r
            .group(&parse_servers_state(STATE, "app").unwrap())
            .unwrap();
        assert_eq!(groups.len(), 2);
        *r.last.lock().unwrap() = groups;
        let to: Weights = [("blue".to_owned(), 0), ("green".to_owned(), 100)].into();
        let (commands, drains) = r.commands(&to);
        assert_eq!(
            commands,
            vec![
                "set server app/green1 state ready",
                "set server app/green1 weight 100",
                "set server app/blue1 weight 0",
                "set server app/blue1 state drain",
                "set server app/blue2 weight 0",
                "set server app/blue2 state drain",
            ]
        );
        assert_eq!(drains, vec!["blue1", "blue2"]);
        let to: Weights = [("blue".to_owned(), 45), ("green".to_owned(), 55)].into();
        let (commands, _) = r.commands(&to);
        assert_eq!(
            commands,
            vec![
                "set server app/green1 state ready",
                "set server app/green1 weight 55",
                "set server app/blue1 weight 23",
                "set server app/blue2 weight 22",
            ]
        );
    }

    #[test]
    fn explicit_members_must_exist() {
        let r = router(Members::Explicit(
            [(
                "blue".to_owned(),
                vec!["blue1".to_owned(), "blue9".to_owned()],
            )]
            .into(),
        ));
        let err = r
            .group(&parse_servers_state(STATE, "app").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("\"blue9\""), "{err}");
    }

    #[test]
    fn names_sockets_and_splits() {
        assert_eq!(member_of("blue1"), "blue");
        assert_eq!(member_of("green-12"), "green");
        assert_eq!(member_of("canary"), "canary");
        assert_eq!(member_of("42"), "42");
        assert_eq!(split(10, 3), vec![4, 3, 3]);
        assert_eq!(split(1, 3), vec![1, 0, 0]);
        assert_eq!(
            Endpoint::parse("tcp:127.0.0.1:9999"),
            Ok(Endpoint::Tcp("127.0.0.1:9999".into()))
        );
        assert!(Endpoint::parse("tcp:127.0.0.1").is_err());
        assert!(Endpoint::parse("tcp:host:0").is_err());
        assert_eq!(
            Endpoint::parse("unix:/run/h.sock"),
            Ok(Endpoint::Unix("/run/h.sock".into()))
        );
        assert_eq!(
            HaproxyRouter::default_lock_file(&Endpoint::Unix("/run/h.sock".into()), None),
            Some(PathBuf::from("/run/h.sock.switchyard-lock"))
        );
        assert_eq!(
            HaproxyRouter::default_lock_file(&Endpoint::Tcp("h:1".into()), None),
            None
        );
    }

    #[test]
    fn sessions_are_read_from_show_stat() {
        let csv = "# pxname,svname,qcur,qmax,scur,smax\napp,blue1,0,0,3,9\napp,green1,0,0,0,1\napp,BACKEND,0,0,3,9\nweb,FRONTEND,,,3,9\n";
        let s = parse_sessions(csv, "app");
        assert_eq!(s.len(), 2);
        assert_eq!(s["blue1"], 3);
    }

    #[tokio::test]
    async fn the_lock_file_admits_one_holder_and_expired_ones_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("state.switchyard-lock");
        let mut r = router(Members::ByName);
        r.lock_file.clone_from(&lock);
        let request = |secs: i64| LeaseRequest {
            token: None,
            holder: "ci".into(),
            message: Some("release 2".into()),
            expires: Utc::now() + chrono::Duration::seconds(secs),
        };
        let first = r.acquire_lease(&request(600), None).await.unwrap();
        assert_eq!(r.leases().await.unwrap(), vec![first.clone()]);
        let err = r.acquire_lease(&request(600), None).await.unwrap_err();
        assert!(matches!(err, TrafficError::LeaseHeld { .. }), "{err}");
        // Our own lease (from the state) may be taken back.
        let again = r.acquire_lease(&request(600), Some(&first)).await.unwrap();
        // Someone else's release does not remove it.
        r.release_lease(&first).await.unwrap();
        assert_eq!(r.leases().await.unwrap(), vec![again.clone()]);
        r.release_lease(&again).await.unwrap();
        assert!(r.leases().await.unwrap().is_empty());
        // An expired lease is taken over.
        let stale = r.acquire_lease(&request(-5), None).await.unwrap();
        let taker = r.acquire_lease(&request(600), None).await.unwrap();
        assert_ne!(stale.token, taker.token);
        assert_eq!(r.leases().await.unwrap(), vec![taker]);
    }
}
