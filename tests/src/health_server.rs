//! An HTTP endpoint on loopback whose health the test controls: it answers 200
//! until told otherwise (or until a given number of requests), then 500.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

/// Something to run for each request before it is answered (e.g. recording
/// what the aws CLI shows at that moment).
pub type OnRequest = Arc<dyn Fn(u64) + Send + Sync>;

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
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let healthy = Arc::new(AtomicBool::new(true));
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s, st) = (healthy.clone(), served.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => continue,
                });
                let mut line = String::new();
                // Read the request head; the body is never needed.
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" || line == "\n" => break,
                        Ok(_) => {}
                    }
                }
                let n = s.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some(f) = &on_request {
                    f(n);
                }
                let ok = h.load(Ordering::SeqCst) && healthy_for.is_none_or(|limit| n <= limit);
                let (status, body) = if ok {
                    ("200 OK", "ok\n")
                } else {
                    ("500 Internal Server Error", "broken\n")
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
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

    /// Makes every later answer 200 (`true`) or 500 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread ends.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}
