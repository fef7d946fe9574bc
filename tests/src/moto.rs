//! moto's server (`moto_server`, from PyPI package `moto`), started on a
//! loopback port of its own and stopped when the handle is dropped.
//!
//! By default the tests reach it through a recording proxy (a
//! [`FaultProxy`] injecting nothing), so that every AWS call a step makes is
//! seen and checked against the IAM policy the step prints (see
//! [`crate::steps::run`]). Benchmarks talk to it directly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fault_proxy::{FaultProxy, Faults};

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    addr: SocketAddr,
    recorder: Option<FaultProxy>,
}

impl Moto {
    /// Starts moto behind a recording proxy: what the tests use.
    pub fn start() -> anyhow::Result<Self> {
        let mut moto = Self::start_direct()?;
        moto.recorder = Some(FaultProxy::start(
            &moto.direct_endpoint(),
            Faults::default(),
        )?);
        Ok(moto)
    }

    /// Starts `moto_server -H 127.0.0.1 -p 0`: the server binds a port the
    /// kernel gives it and names it in its log, so two tests starting moto at
    /// the same moment can never end up sharing one server (a port picked
    /// free beforehand can be taken by another test's server in between,
    /// and then both talk to whichever bound it). Waits until it answers;
    /// clients talk to it directly (benchmarks).
    pub fn start_direct() -> anyhow::Result<Self> {
        let mut child = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start moto_server (pip install 'moto[server]'): {e}")
            })?;
        let port = child
            .stderr
            .take()
            .map(listening_port)
            .transpose()?
            .flatten();
        let mut moto = Self {
            child,
            addr: ([127, 0, 0, 1], port.unwrap_or(0)).into(),
            recorder: None,
        };
        anyhow::ensure!(
            port.is_some(),
            "moto_server exited before it named its port"
        );
        moto.wait_ready(Duration::from_secs(30))?;
        Ok(moto)
    }

    /// Its endpoint URL, for `AWS_ENDPOINT_URL`: the recording proxy's when there is one.
    pub fn endpoint(&self) -> String {
        self.recorder
            .as_ref()
            .map_or_else(|| self.direct_endpoint(), FaultProxy::endpoint)
    }

    /// The recording proxy in front of moto, when there is one.
    pub fn recorder(&self) -> Option<&FaultProxy> {
        self.recorder.as_ref()
    }

    /// moto's own endpoint URL, bypassing the recording proxy.
    pub fn direct_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Environment for a process that talks to this moto: endpoint, region and
    /// dummy credentials, and nothing that could reach a real AWS account.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint().as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_SESSION_TOKEN", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_MAX_ATTEMPTS", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Waits until every call sent through the recording proxy has reached
    /// moto (those of a killed step included).
    pub fn wait_idle(&self) {
        if let Some(r) = &self.recorder {
            r.wait_idle();
        }
    }

    /// Forgets everything moto holds (POST /moto-api/reset).
    pub fn reset(&self) -> anyhow::Result<()> {
        let status = http_status(self.addr, "POST", "/moto-api/reset")?;
        anyhow::ensure!(status == 200, "moto reset answered {status}");
        Ok(())
    }

    fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let mut delay = Duration::from_millis(50);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("moto_server exited with {status} before it answered");
            }
            if http_status(self.addr, "GET", "/moto-api/").is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "moto_server did not answer within {within:?}"
            );
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> String {
    std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_owned())
}

/// Reads moto's log until it says `Running on http://127.0.0.1:PORT`, and
/// returns the port (`None` if the log ended first); the rest of the log
/// (a line per request) is drained by a thread, so that moto never blocks on
/// a full pipe.
fn listening_port(log: ChildStderr) -> anyhow::Result<Option<u16>> {
    let mut lines = BufReader::new(log);
    let mut line = String::new();
    let mut port = None;
    while lines.read_line(&mut line)? > 0 {
        if let Some(rest) = line.trim().split("Running on http://127.0.0.1:").nth(1) {
            port = rest.trim_end_matches('/').parse::<u16>().ok();
            if port.is_some() {
                break;
            }
        }
        line.clear();
    }
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    Ok(port)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A minimal HTTP/1.0 request, for readiness checks only.
fn http_status(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head)?;
    let text = std::str::from_utf8(&head)?;
    Ok(text.get(9..12).unwrap_or("0").parse()?)
}
