//! An HTTP endpoint on loopback whose health the test controls: healthy (200)
//! or not (500) by a script of answers, after a delay, with a chosen body.
//! Each connection is served on its own thread, so slow answers overlap.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Something to run for each request before it is answered (e.g. recording
/// what the aws CLI shows at that moment).
pub type OnRequest = Arc<dyn Fn(u64) + Send + Sync>;

/// How the endpoint answers.
#[derive(Clone, Default)]
#[allow(missing_debug_implementations)]
pub struct Behaviour {
    /// Answer 200 for the first N requests, 500 after (all 200 when `None`).
    pub healthy_for: Option<u64>,
    /// Healthy or not per request, in order; the last entry repeats.
    pub script: Vec<bool>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Body of a healthy answer (default `ok`).
    pub body: Option<String>,
    /// Runs before each answer.
    pub on_request: Option<OnRequest>,
    /// Answer only requests with this Host header (others: 404), as a
    /// server behind a host-routing load balancer is reached only by its host.
    pub host: Option<String>,
}

/// A running health endpoint.
pub struct HealthServer {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for HealthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HealthServer {
    /// Serves 200 for the first `healthy_for` requests (all of them when
    /// `None`), 500 after that; `on_request` runs before each answer.
    pub fn start(healthy_for: Option<u64>, on_request: Option<OnRequest>) -> anyhow::Result<Self> {
        Self::with(Behaviour {
            healthy_for,
            on_request,
            ..Behaviour::default()
        })
    }

    /// Serves as `behaviour` says.
    pub fn with(behaviour: Behaviour) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let healthy = Arc::new(AtomicBool::new(true));
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s, st) = (healthy.clone(), served.clone(), stop.clone());
        let behaviour = Arc::new(behaviour);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let n = s.fetch_add(1, Ordering::SeqCst) + 1;
                let (h, b) = (h.clone(), behaviour.clone());
                thread::spawn(move || answer(stream, n, &h, &b));
            }
        });
        Ok(Self {
            addr,
            healthy,
            served,
            stop,
        })
    }

    /// The URL to probe.
    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes every later answer 200 (`true`) or 500 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

fn answer(mut stream: TcpStream, n: u64, healthy: &AtomicBool, b: &Behaviour) {
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(clone);
    let mut line = String::new();
    let mut host = None;
    // Read the request head; the body is never needed.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("host") {
                        host = Some(value.trim().to_owned());
                    }
                }
            }
        }
    }
    if b.host.is_some() && host != b.host {
        let _ = write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 11\r\nConnection: close\r\n\r\nwrong host\n"
        );
        return;
    }
    if let Some(f) = &b.on_request {
        f(n);
    }
    if !b.delay.is_zero() {
        thread::sleep(b.delay);
    }
    let scripted = if b.script.is_empty() {
        true
    } else {
        let i = usize::try_from(n - 1)
            .unwrap_or(usize::MAX)
            .min(b.script.len() - 1);
        b.script[i]
    };
    let ok =
        healthy.load(Ordering::SeqCst) && scripted && b.healthy_for.is_none_or(|limit| n <= limit);
    let body = if ok {
        b.body.clone().unwrap_or_else(|| "ok\n".to_owned())
    } else {
        "broken\n".to_owned()
    };
    let status = if ok {
        "200 OK"
    } else {
        "500 Internal Server Error"
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread ends.
        let _ = TcpStream::connect(self.addr);
    }
}
