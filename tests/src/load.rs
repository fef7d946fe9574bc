//! Steady HTTP load for router tests: small keep-alive servers on loopback
//! that answer with their version (`blue`, `green`), and a load generator
//! that sends a paced stream of requests through a proxy over keep-alive
//! connections, recording every answer's time and version and every failure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A tokio runtime of its own, so that sync tests can start servers and load.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// An HTTP/1.1 keep-alive server answering `200 <version>\n` to every request.
#[allow(missing_debug_implementations)]
pub struct VersionServer {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

impl VersionServer {
    /// Starts a server answering with `version`.
    pub fn start(version: &str) -> Result<Self> {
        let runtime = runtime()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let served = Arc::new(AtomicU64::new(0));
        let body = format!("{version}\n");
        let counter = served.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (body, counter) = (body.clone(), counter.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &body, &counter).await;
                });
            }
        });
        Ok(Self {
            addr,
            served,
            _runtime: runtime,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

async fn serve(stream: TcpStream, body: &str, counter: &AtomicU64) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        // Read one request head (GET, no body).
        let mut saw_line = false;
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if line == "\r\n" || line == "\n" {
                if saw_line {
                    break;
                }
                continue;
            }
            saw_line = true;
        }
        counter.fetch_add(1, Ordering::Relaxed);
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        write.write_all(answer.as_bytes()).await?;
    }
}

/// One answer seen by the load generator.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it arrived.
    pub at: SystemTime,
    /// The version that answered, or `None` for a failed request.
    pub version: Option<String>,
}

/// What a load run saw.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Every answer and failure, in time order.
    pub samples: Vec<Sample>,
    /// Failures with what went wrong (first ones only).
    pub errors: Vec<String>,
    /// How long it ran.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Failed requests.
    pub fn failures(&self) -> usize {
        self.samples.iter().filter(|s| s.version.is_none()).count()
    }

    /// Requests per second achieved.
    pub fn rate(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = self.samples.len() as f64;
        n / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Answers per version between `from` and `to`.
    pub fn mix(&self, from: SystemTime, to: SystemTime) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.at >= from && s.at < to) {
            if let Some(v) = &s.version {
                *out.entry(v.clone()).or_insert(0) += 1;
            }
        }
        out
    }
}

/// A paced request stream through `target`, running until stopped.
#[allow(missing_debug_implementations)]
pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    errors: Arc<Mutex<Vec<String>>>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Runtime,
}

impl Load {
    /// Starts `connections` keep-alive connections to `target` sending
    /// `rate` requests per second between them.
    pub fn start(target: SocketAddr, rate: u32, connections: u32) -> Result<Self> {
        let runtime = runtime()?;
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::with_capacity(200_000)));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let period = Duration::from_secs_f64(f64::from(connections) / f64::from(rate.max(1)));
        let tasks = (0..connections)
            .map(|_| {
                let (stop, samples, errors) = (stop.clone(), samples.clone(), errors.clone());
                runtime.spawn(async move {
                    let mut ticks = tokio::time::interval(period);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut conn: Option<BufReader<TcpStream>> = None;
                    while !stop.load(Ordering::Relaxed) {
                        ticks.tick().await;
                        let result = request(&mut conn, target).await;
                        let version = match result {
                            Ok(v) => Some(v),
                            Err(e) => {
                                conn = None;
                                if let Ok(mut list) = errors.lock() {
                                    if list.len() < 20 {
                                        list.push(e.to_string());
                                    }
                                }
                                None
                            }
                        };
                        if let Ok(mut list) = samples.lock() {
                            list.push(Sample {
                                at: SystemTime::now(),
                                version,
                            });
                        }
                    }
                })
            })
            .collect();
        Ok(Self {
            stop,
            samples,
            errors,
            started: Instant::now(),
            tasks,
            runtime,
        })
    }

    /// Stops the load and returns what it saw.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        for task in self.tasks {
            let _ = self.runtime.block_on(task);
        }
        let mut samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        samples.sort_by_key(|s| s.at);
        LoadReport {
            samples,
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
            elapsed,
        }
    }
}

async fn request(conn: &mut Option<BufReader<TcpStream>>, target: SocketAddr) -> Result<String> {
    if conn.is_none() {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        *conn = Some(BufReader::new(stream));
    }
    let Some(stream) = conn.as_mut() else {
        anyhow::bail!("no connection");
    };
    let exchange = async {
        stream
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
            .await?;
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        if !line.starts_with("HTTP/1.1 200") {
            anyhow::bail!("answer {:?}", line.trim());
        }
        let mut length = 0usize;
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                anyhow::bail!("connection closed mid-answer");
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        Ok(String::from_utf8_lossy(&body).trim().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 5 s"))?
}
