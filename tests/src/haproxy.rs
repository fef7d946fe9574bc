//! HAProxy (Debian's package) started on loopback with a generated config:
//! one frontend, one `balance roundrobin` backend `app` holding the given
//! servers, the runtime API at level admin on a unix socket and on TCP, and a
//! server-state file loaded at start, so that a reload (`-sf`) keeps what was
//! saved there. Stopped when dropped.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One server of the backend.
#[derive(Debug, Clone)]
pub struct Server {
    /// Its name, e.g. `blue1`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its configured weight.
    pub weight: u32,
}

/// A running HAProxy.
#[derive(Debug)]
pub struct Haproxy {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    admin_port: u16,
}

/// The backend's name in the generated config.
pub const BACKEND: &str = "app";

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Haproxy {
    /// Starts HAProxy with `servers` in backend [`BACKEND`]. Its ports are
    /// picked free just before it binds them; when another process took one
    /// in between, HAProxy does not come up, and it is started again on
    /// other ports.
    pub fn start(servers: &[Server]) -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(servers) {
                Ok(haproxy) => return Ok(haproxy),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("HAProxy did not start")))
    }

    fn start_once(servers: &[Server]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let admin_port = free_port()?;
        let mut config = format!(
            "global
  stats socket {dir}/admin.sock mode 600 level admin
  stats socket ipv4@127.0.0.1:{admin_port} level admin
  server-state-file {dir}/server-state
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
  load-server-state-from-file global
frontend web
  bind 127.0.0.1:{port}
  default_backend {BACKEND}
backend {BACKEND}
  balance roundrobin
",
            dir = dir.path().display()
        );
        for s in servers {
            let _ = writeln!(config, "  server {} {} weight {}", s.name, s.addr, s.weight);
        }
        std::fs::write(dir.path().join("haproxy.cfg"), config)?;
        let child = spawn(dir.path(), None)?;
        let haproxy = Self {
            dir,
            child,
            port,
            admin_port,
        };
        haproxy.wait_ready()?;
        Ok(haproxy)
    }

    /// The frontend's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The frontend's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The runtime API's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// The runtime API on TCP, as `--haproxy-socket` takes it.
    pub fn admin_tcp(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.admin_port)
    }

    /// The server-state file HAProxy loads at start.
    pub fn state_file(&self) -> PathBuf {
        self.dir.path().join("server-state")
    }

    /// Sends one command line to the runtime API and returns the answer.
    pub fn command(&self, line: &str) -> Result<String> {
        let mut stream = UnixStream::connect(self.socket())
            .with_context(|| format!("cannot connect to {}", self.socket().display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(format!("{line}\n").as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// `get weight` of one server: the current weight.
    pub fn weight(&self, server: &str) -> Result<u32> {
        let answer = self.command(&format!("get weight {BACKEND}/{server}"))?;
        answer
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .with_context(|| format!("get weight {server}: {answer}"))
    }

    /// Reloads the way init scripts do: a new process with `-sf <old pid>`,
    /// which reads the server-state file and takes over the listeners.
    pub fn reload(&mut self) -> Result<()> {
        let old = self.child.id();
        let child = spawn(self.dir.path(), Some(old))?;
        let mut previous = std::mem::replace(&mut self.child, child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while previous.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("the old HAProxy {old} did not exit after the reload");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(answer) = self.command("show info") {
                if answer.contains(&format!("Pid: {}", self.child.id())) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "HAProxy did not come up; log:\n{}",
                    std::fs::read_to_string(self.dir.path().join("haproxy.log"))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(dir: &Path, finish: Option<u32>) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("haproxy.log"))?;
    let mut cmd = Command::new(binary());
    cmd.arg("-db")
        .arg("-f")
        .arg(dir.join("haproxy.cfg"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(pid) = finish {
        cmd.arg("-sf").arg(pid.to_string());
    }
    cmd.spawn()
        .context("cannot start haproxy (apt-get install haproxy; `make deps` does)")
}

/// `$HAPROXY`, else `haproxy` on the PATH, else Debian's `/usr/sbin/haproxy`.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HAPROXY") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("haproxy").is_file())
    });
    if on_path {
        PathBuf::from("haproxy")
    } else {
        PathBuf::from("/usr/sbin/haproxy")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
