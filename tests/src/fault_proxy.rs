//! A fault-injecting HTTP proxy in front of moto's server, owned by the tests.
//!
//! Steps are pointed at the proxy (`AWS_ENDPOINT_URL`) while the test checks
//! the outcome against moto directly. At configurable rates the proxy answers
//! with what AWS sends under stress, instead of forwarding:
//! - `Throttling` (Route53, ELBv2, Auto Scaling, CloudWatch: 400) and
//!   `RequestLimitExceeded` (EC2: 503);
//! - `PriorRequestNotComplete` (Route53 ChangeResourceRecordSets: 400);
//! - 500 `InternalFailure` / `InternalError`;
//! - slow answers (forwarded after a delay);
//! - dropped connections, before forwarding (the call never happened) or
//!   after it (the call happened but its answer was lost — the hard case for
//!   anything that is not idempotent).
//!
//! Every Route53 change batch it forwards is first checked as Route53 checks
//! it, one batch at a time: what Route53 refuses and moto accepts (a CREATE
//! of a record set that exists, a DELETE that does not match) is refused
//! with `InvalidChangeBatch` (see [`crate::route53_front`]), so the Route53
//! the tests see is as strict as the real one.
//!
//! Auto Scaling's lifecycle hooks are made and completed as AWS does, which
//! moto does not (see [`crate::autoscaling_front`]): the hooks of a
//! CreateAutoScalingGroup call are put into moto with the group, and
//! CompleteLifecycleAction and RecordLifecycleActionHeartbeat are answered
//! (and recorded with their arguments) here.
//!
//! Every call is recorded as `service:Action` (from the SigV4 credential scope
//! and the query protocol's `Action=` or Route53's REST path), which is how the
//! least-privilege tests compare what a step called with the IAM policy it
//! prints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::autoscaling_front::{self, LifecycleCall};
use crate::iam::Need;
use crate::route53_front;

/// How often each fault is injected, as a probability per request (0.0–1.0).
/// The kinds are drawn in turn from one roll, so their sum is the total fault rate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// `Throttling` / `RequestLimitExceeded`.
    pub throttle: f64,
    /// `PriorRequestNotComplete`, only on Route53 ChangeResourceRecordSets.
    pub prior_request: f64,
    /// 500 internal errors.
    pub server_error: f64,
    /// Forwarded after `slow_by`.
    pub slow: f64,
    /// The delay of a slow answer.
    pub slow_by: Duration,
    /// The connection closed before the call is forwarded.
    pub drop_before: f64,
    /// The call forwarded, then the connection closed without its answer.
    pub drop_after: f64,
}

impl Faults {
    /// The rate of all kinds together.
    pub fn total(&self) -> f64 {
        self.throttle
            + self.prior_request
            + self.server_error
            + self.slow
            + self.drop_before
            + self.drop_after
    }

    /// `total` spread evenly over every kind.
    pub fn spread(total: f64) -> Self {
        let each = total / 6.0;
        Self {
            throttle: each,
            prior_request: each,
            server_error: each,
            slow: each,
            slow_by: Duration::from_millis(400),
            drop_before: each,
            drop_after: each,
        }
    }
}

/// What the proxy did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Forwarded,
    Throttled,
    PriorRequestNotComplete,
    ServerError,
    Slow,
    DroppedBefore,
    DroppedAfter,
}

/// One call seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The SigV4 signing name: `route53`, `ec2`, `elasticloadbalancing`, `autoscaling`, `monitoring`.
    pub service: String,
    /// The API action, e.g. `ChangeResourceRecordSets`.
    pub action: String,
    /// What the proxy did.
    pub outcome: Outcome,
    /// The caller's User-Agent (`aws-sdk-rust/...` for the steps, `aws-cli/...` for fixtures).
    pub user_agent: String,
    /// What IAM authorizes for it: its action on each resource it names
    /// (`None` when the request does not tell them; see [`crate::iam`]).
    pub needs: Option<Vec<Need>>,
}

impl Call {
    /// `service:Action` as IAM spells it (`monitoring` is `cloudwatch` there).
    pub fn iam_action(&self) -> String {
        let prefix = match self.service.as_str() {
            "monitoring" => "cloudwatch",
            other => other,
        };
        format!("{prefix}:{}", self.action)
    }
}

/// A running proxy; stopped when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    faults: Arc<Mutex<Faults>>,
    drawn: Arc<Mutex<Drawn>>,
    in_flight: Arc<AtomicUsize>,
    lifecycle: Arc<tokio::sync::Mutex<Vec<LifecycleCall>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`
    /// (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str, faults: Faults) -> anyhow::Result<Self> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let faults = Arc::new(Mutex::new(faults));
        let drawn: Arc<Mutex<Drawn>> = Arc::default();
        let (stop, stopped) = oneshot::channel();
        let in_flight: Arc<AtomicUsize> = Arc::default();
        let lifecycle: Arc<tokio::sync::Mutex<Vec<LifecycleCall>>> = Arc::default();
        let shared = Arc::new(Shared {
            lifecycle: lifecycle.clone(),
            in_flight: in_flight.clone(),
            upstream: upstream.trim_end_matches('/').to_owned(),
            // A fresh connection per call: moto's server closes idle
            // keep-alive connections on its own, and a call sent on one it
            // just closed would fail as if moto were gone (a 502 here).
            client: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(60))
                .build()?,
            calls: calls.clone(),
            faults: faults.clone(),
            drawn: drawn.clone(),
            route53_changes: tokio::sync::Mutex::new(()),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(serve(std_listener, shared, stopped));
        });
        RECORDERS
            .lock()
            .expect("recorders lock")
            .insert(format!("http://{addr}"), calls.clone());
        Ok(Self {
            addr,
            calls,
            faults,
            drawn,
            in_flight,
            lifecycle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The proxy's URL, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call seen so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// Every CompleteLifecycleAction and RecordLifecycleActionHeartbeat the
    /// proxy answered (see [`crate::autoscaling_front`]), in order.
    pub fn lifecycle_calls(&self) -> Vec<LifecycleCall> {
        self.lifecycle.blocking_lock().clone()
    }

    /// How many requests ended each way.
    pub fn outcomes(&self) -> BTreeMap<Outcome, usize> {
        let mut counts = BTreeMap::new();
        for call in self.calls.lock().expect("calls lock").iter() {
            *counts.entry(call.outcome).or_default() += 1;
        }
        counts
    }

    /// Waits until no request is being forwarded: a killed client's last call
    /// still reaches moto after the client is gone, as it would reach AWS.
    ///
    /// Idle means no call in flight for 150 ms on end: the bytes a killed
    /// client had already written reach the proxy a moment after it died.
    pub fn wait_idle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut quiet = 0;
        while quiet < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                quiet += 1;
            } else {
                quiet = 0;
            }
        }
    }

    /// Changes the fault rates from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().expect("faults lock") = faults;
        *self.drawn.lock().expect("drawn lock") = Drawn::default();
    }
}

/// Every running proxy's calls by its endpoint, so that whoever runs a step
/// with `AWS_ENDPOINT_URL` set to a proxy can see what the step called.
static RECORDERS: Mutex<BTreeMap<String, Arc<Mutex<Vec<Call>>>>> = Mutex::new(BTreeMap::new());

/// The calls seen so far by the proxy at `endpoint`, if one runs there.
pub fn calls_at(endpoint: &str) -> Option<Vec<Call>> {
    let recorders = RECORDERS.lock().expect("recorders lock");
    let calls = recorders.get(endpoint.trim_end_matches('/'))?;
    let calls = calls.lock().expect("calls lock").clone();
    Some(calls)
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        RECORDERS
            .lock()
            .expect("recorders lock")
            .remove(&self.endpoint());
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug)]
struct Shared {
    in_flight: Arc<AtomicUsize>,
    upstream: String,
    client: reqwest::Client,
    calls: Arc<Mutex<Vec<Call>>>,
    faults: Arc<Mutex<Faults>>,
    drawn: Arc<Mutex<Drawn>>,
    /// Held while a Route53 change batch is checked and forwarded: Route53
    /// applies one batch after the other.
    route53_changes: tokio::sync::Mutex<()>,
    /// The lifecycle actions answered; held while one is judged.
    lifecycle: Arc<tokio::sync::Mutex<Vec<LifecycleCall>>>,
}

/// Calls and faults since the rates were last set.
#[derive(Debug, Default)]
struct Drawn {
    calls: u32,
    faults: u32,
}

impl Drawn {
    /// The outcome of the next call: a fair draw, except that a call that
    /// would leave fewer faults than half the configured rate asks for is
    /// faulted (of a kind drawn as usual). So a run never sees far fewer
    /// faults than it was set up for by chance alone, and the figures a test
    /// reports can be checked without a small chance of failing.
    fn next(&mut self, faults: &Faults, service: &str, action: &str) -> Outcome {
        self.calls += 1;
        let mut outcome = draw(faults, service, action, fastrand::f64());
        let floor = faults.total() * f64::from(self.calls) / 2.0;
        if outcome == Outcome::Forwarded && f64::from(self.faults) + 1.0 <= floor {
            // Below the total rate (a hair under, for rounding): always a fault.
            let roll = fastrand::f64() * faults.total() * (1.0 - 1e-9);
            outcome = draw(faults, service, action, roll);
        }
        if outcome != Outcome::Forwarded {
            self.faults += 1;
        }
        outcome
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            // An error here is a dropped connection: the point of some faults.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Why a connection is dropped on purpose.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    // The call is handled on its own task, so that it goes on to moto (and is
    // counted until it lands) even when its client is killed and hyper drops
    // this future: as a request already sent goes on at AWS.
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let (done, result) = oneshot::channel();
    tokio::spawn(async move {
        let response = handle_counted(&shared, req).await;
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        let _ = done.send(response);
    });
    result.await.unwrap_or(Err(Dropped))
}

async fn handle_counted(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let service = signing_service(&parts.headers).unwrap_or_else(|| "unknown".to_owned());
    let action = action(&service, parts.method.as_str(), parts.uri.path(), &body);
    let region = signing_region(&parts.headers).unwrap_or_else(|| "us-east-1".to_owned());
    let needs = crate::iam::needs((&service, &action, &region), parts.uri.path(), &body);
    let route53_change = service == "route53" && action == "ChangeResourceRecordSets";
    let faults = *shared.faults.lock().expect("faults lock");
    let outcome = shared
        .drawn
        .lock()
        .expect("drawn lock")
        .next(&faults, &service, &action);
    let user_agent = parts
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    shared.calls.lock().expect("calls lock").push(Call {
        service: service.clone(),
        action: action.clone(),
        outcome,
        user_agent,
        needs,
    });
    match outcome {
        Outcome::Throttled => return Ok(throttled(&service)),
        Outcome::PriorRequestNotComplete => {
            return Ok(error_response(
                &service,
                400,
                "PriorRequestNotComplete",
                "The request was rejected because Route 53 was still processing a prior request.",
            ))
        }
        Outcome::ServerError => {
            let code = if service == "ec2" {
                "InternalError"
            } else {
                "InternalFailure"
            };
            return Ok(error_response(
                &service,
                500,
                code,
                "injected internal error",
            ));
        }
        Outcome::DroppedBefore => return Err(Dropped),
        Outcome::Slow => tokio::time::sleep(faults.slow_by).await,
        Outcome::Forwarded | Outcome::DroppedAfter => {}
    }
    // A change batch is checked as Route53 checks it, and forwarded while no
    // other batch is, so that the check and the change are one step.
    let _one_batch_at_a_time = if route53_change {
        let guard = shared.route53_changes.lock().await;
        match route53_refusal(shared, &parts, &body).await {
            Ok(None) => {}
            Ok(Some(refused)) => {
                return Ok(error_response(
                    &service,
                    400,
                    "InvalidChangeBatch",
                    &refused,
                ))
            }
            Err(e) => return Ok(plain(502, &format!("route53 front: {e}"))),
        }
        Some(guard)
    } else {
        None
    };
    let response = match (service.as_str(), action.as_str()) {
        ("autoscaling", "CompleteLifecycleAction" | "RecordLifecycleActionHeartbeat") => {
            lifecycle_action(shared, &parts, &body, &action).await
        }
        ("autoscaling", "CreateAutoScalingGroup") => {
            let hooks = autoscaling_front::hook_specifications(&autoscaling_front::form(&body));
            let auth = parts.headers.get("authorization").cloned();
            let response = forward(shared, parts, body).await;
            if response.status().is_success() {
                for hook in &hooks {
                    if let Err(e) = upstream_form(shared, auth.as_ref(), hook).await {
                        return Ok(plain(502, &format!("autoscaling front: {e}")));
                    }
                }
            }
            response
        }
        _ => forward(shared, parts, body).await,
    };
    if outcome == Outcome::DroppedAfter {
        return Err(Dropped);
    }
    Ok(response)
}

/// Sends a query-protocol call to moto with the signature of the call that
/// led to it (moto tells services apart by its credential scope); returns
/// the answer's body, or why there was none or it was an error.
async fn upstream_form(
    shared: &Shared,
    authorization: Option<&hyper::header::HeaderValue>,
    fields: &BTreeMap<String, String>,
) -> Result<String, String> {
    let authorization = authorization.ok_or("the call is not signed")?;
    let answer = shared
        .client
        .post(format!("{}/", shared.upstream))
        .header("authorization", authorization.as_bytes())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(autoscaling_front::encode(fields))
        .send()
        .await
        .map_err(|e| format!("moto unreachable: {e}"))?;
    let status = answer.status();
    let text = answer.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "{} answered {status}: {text}",
            fields.get("Action").map_or("", String::as_str)
        ));
    }
    Ok(text)
}

/// Answers CompleteLifecycleAction or RecordLifecycleActionHeartbeat as
/// Auto Scaling does, judged against what moto holds (the group's hooks and
/// instances) and the actions completed before; records it.
async fn lifecycle_action(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    action: &str,
) -> Response<Full<Bytes>> {
    let fields = autoscaling_front::form(body);
    let mut call = LifecycleCall::from_form(action, &fields);
    let auth = parts.headers.get("authorization");
    let mut answered = shared.lifecycle.lock().await;
    let hooks_query = BTreeMap::from([
        ("Action".to_owned(), "DescribeLifecycleHooks".to_owned()),
        ("Version".to_owned(), "2011-01-01".to_owned()),
        ("AutoScalingGroupName".to_owned(), call.group.clone()),
    ]);
    let groups_query = BTreeMap::from([
        ("Action".to_owned(), "DescribeAutoScalingGroups".to_owned()),
        ("Version".to_owned(), "2011-01-01".to_owned()),
        (
            "AutoScalingGroupNames.member.1".to_owned(),
            call.group.clone(),
        ),
    ]);
    let hooks = upstream_form(shared, auth, &hooks_query).await;
    let groups = upstream_form(shared, auth, &groups_query).await;
    let (hooks, groups) = match (hooks, groups) {
        (Ok(h), Ok(g)) => (h, g),
        (Err(e), _) | (_, Err(e)) => return plain(502, &format!("autoscaling front: {e}")),
    };
    call.refused = call.refusal(
        autoscaling_front::names_hook(&hooks, &call.hook),
        autoscaling_front::lists_instance(&groups, &call.instance),
        &answered,
    );
    let response = match &call.refused {
        None => {
            let mut r = Response::new(Full::new(Bytes::from(autoscaling_front::ok_body(action))));
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("text/xml"),
            );
            r
        }
        Some(why) => error_response("autoscaling", 400, "ValidationError", why),
    };
    answered.push(call);
    response
}

/// Why Route53 would refuse the change batch `body` to the zone in its
/// path, given what moto holds now (see [`crate::route53_front`]); an error
/// when what moto holds cannot be read (the call is then answered 502, so
/// that nothing passes unchecked).
async fn route53_refusal(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: &[u8],
) -> Result<Option<String>, String> {
    let path = parts.uri.path();
    let zone = route53_front::zone_of(path).ok_or_else(|| format!("no zone in {path}"))?;
    // moto tells services apart by the credential scope of the signature:
    // the listing goes with the change's own.
    let authorization = parts
        .headers
        .get("authorization")
        .ok_or("the change is not signed")?
        .as_bytes();
    let mut current = Vec::new();
    let mut query: Vec<(String, String)> = Vec::new();
    loop {
        let url = format!("{}/2013-04-01/hostedzone/{zone}/rrset", shared.upstream);
        let page = shared
            .client
            .get(&url)
            .header("authorization", authorization)
            .query(&query)
            .send()
            .await
            .map_err(|e| format!("cannot list the zone: {e}"))?;
        if !page.status().is_success() {
            return Err(format!("listing the zone answered {}", page.status()));
        }
        let text = page
            .text()
            .await
            .map_err(|e| format!("cannot read the zone's listing: {e}"))?;
        let (sets, next) = route53_front::listing(&text);
        current.extend(sets);
        match next {
            Some(next) => query = next,
            None => break,
        }
    }
    let changes = route53_front::changes(&String::from_utf8_lossy(body));
    Ok(route53_front::refusal(&current, &changes))
}

/// The outcome of a call for `roll`, uniform in [0, 1): a fault of one kind
/// when it falls below the rates.
fn draw(faults: &Faults, service: &str, action: &str, roll: f64) -> Outcome {
    let mut edge = 0.0;
    let mut kinds = vec![
        (faults.throttle, Outcome::Throttled),
        (faults.server_error, Outcome::ServerError),
        (faults.slow, Outcome::Slow),
        (faults.drop_before, Outcome::DroppedBefore),
        (faults.drop_after, Outcome::DroppedAfter),
    ];
    if service == "route53" && action == "ChangeResourceRecordSets" {
        kinds.push((faults.prior_request, Outcome::PriorRequestNotComplete));
    }
    // Where PriorRequestNotComplete cannot happen, its share goes to the
    // other kinds: every call sees the same total fault rate.
    let applicable: f64 = kinds.iter().map(|(rate, _)| rate).sum();
    let total = applicable.max(faults.total());
    let scale = if applicable > 0.0 {
        total / applicable
    } else {
        0.0
    };
    for (rate, outcome) in kinds {
        edge += rate * scale;
        if roll < edge {
            return outcome;
        }
    }
    Outcome::Forwarded
}

async fn forward(
    shared: &Shared,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str);
    let url = format!("{}{path}", shared.upstream);
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut request = shared.client.request(method, &url).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    match request.send().await {
        Ok(upstream) => {
            let status = upstream.status().as_u16();
            let headers = upstream.headers().clone();
            let bytes = upstream.bytes().await.unwrap_or_default();
            let mut response = Response::builder().status(status);
            for (name, value) in &headers {
                if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                    response = response.header(name.as_str(), value.as_bytes());
                }
            }
            response
                .body(Full::new(bytes))
                .unwrap_or_else(|_| plain(502, "bad upstream response"))
        }
        Err(e) => plain(502, &format!("upstream unreachable: {e}")),
    }
}

fn plain(status: u16, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response
}

fn throttled(service: &str) -> Response<Full<Bytes>> {
    if service == "ec2" {
        error_response(
            service,
            503,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        )
    } else {
        error_response(service, 400, "Throttling", "Rate exceeded")
    }
}

/// An error in the service's own wire format: EC2's `<Response><Errors>`,
/// the query services' and Route53's `<ErrorResponse>`.
fn error_response(service: &str, status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = if service == "ec2" {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>"
        )
    } else {
        let kind = if status >= 500 { "Receiver" } else { "Sender" };
        format!(
            "<?xml version=\"1.0\"?>\n<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>"
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/xml"),
    );
    response
}

/// The SigV4 signing name from `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request`.
fn signing_service(headers: &hyper::HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let credential = auth.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    scope.split('/').nth(3).map(str::to_owned)
}

/// The SigV4 region of the credential scope.
fn signing_region(headers: &hyper::HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let credential = auth.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    scope.split('/').nth(2).map(str::to_owned)
}

/// The API action: `Action=` of the query protocol, or Route53's or S3's REST route.
fn action(service: &str, method: &str, path: &str, body: &[u8]) -> String {
    if service == "route53" {
        return route53_action(method, path).to_owned();
    }
    if service == "s3" {
        return s3_action(method, path).to_owned();
    }
    let body = String::from_utf8_lossy(body);
    body.split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .map_or_else(|| format!("{method} {path}"), str::to_owned)
}

/// An S3 object call, path-style (`/BUCKET/KEY`), as IAM names it: a HEAD
/// is allowed by s3:GetObject.
fn s3_action(method: &str, path: &str) -> &'static str {
    let object = path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    match (method, object) {
        ("GET" | "HEAD", true) => "GetObject",
        ("PUT", true) => "PutObject",
        ("DELETE", true) => "DeleteObject",
        ("PUT", false) => "CreateBucket",
        ("GET", false) => "ListBucket",
        _ => "Unknown",
    }
}

fn route53_action(method: &str, path: &str) -> &'static str {
    let parts: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    // parts[0] is the API version, 2013-04-01.
    match (method, parts.get(1..).unwrap_or_default()) {
        ("GET", ["hostedzone"]) => "ListHostedZones",
        ("POST", ["hostedzone"]) => "CreateHostedZone",
        ("GET", ["hostedzonesbyname"]) => "ListHostedZonesByName",
        ("GET", ["hostedzone", _]) => "GetHostedZone",
        ("DELETE", ["hostedzone", _]) => "DeleteHostedZone",
        ("POST", ["hostedzone", _, "rrset"]) => "ChangeResourceRecordSets",
        ("GET", ["hostedzone", _, "rrset"]) => "ListResourceRecordSets",
        ("GET", ["change", _]) => "GetChange",
        ("POST", ["healthcheck"]) => "CreateHealthCheck",
        ("GET", ["healthcheck"]) => "ListHealthChecks",
        ("GET", ["healthcheck", _]) => "GetHealthCheck",
        ("POST", ["healthcheck", _]) => "UpdateHealthCheck",
        ("DELETE", ["healthcheck", _]) => "DeleteHealthCheck",
        ("GET", ["healthcheck", _, "status"]) => "GetHealthCheckStatus",
        ("POST", ["tags", _, _]) => "ChangeTagsForResource",
        ("GET", ["tags", _, _]) => "ListTagsForResource",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route53_paths_name_their_actions() {
        assert_eq!(
            route53_action("POST", "/2013-04-01/hostedzone/Z1/rrset/"),
            "ChangeResourceRecordSets"
        );
        assert_eq!(
            route53_action("GET", "/2013-04-01/hostedzone/Z1/rrset"),
            "ListResourceRecordSets"
        );
        assert_eq!(route53_action("GET", "/2013-04-01/change/C1"), "GetChange");
        assert_eq!(
            route53_action("GET", "/2013-04-01/healthcheck/H/status"),
            "GetHealthCheckStatus"
        );
    }

    #[test]
    fn query_actions_and_signing_names_are_read() {
        assert_eq!(
            action(
                "ec2",
                "POST",
                "/",
                b"Action=RunInstances&Version=2016-11-15"
            ),
            "RunInstances"
        );
        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            "authorization",
            hyper::header::HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=testing/20261127/us-east-1/monitoring/aws4_request, SignedHeaders=host, Signature=x",
            ),
        );
        assert_eq!(signing_service(&headers).as_deref(), Some("monitoring"));
    }

    #[test]
    fn no_faults_forwards_everything_and_full_rate_always_faults() {
        let none = Faults::default();
        assert!((0..200)
            .all(|_| draw(&none, "ec2", "RunInstances", fastrand::f64()) == Outcome::Forwarded));
        let all = Faults {
            throttle: 1.0,
            ..Faults::default()
        };
        assert!((0..200)
            .all(|_| draw(&all, "ec2", "RunInstances", fastrand::f64()) == Outcome::Throttled));
        let prior = Faults {
            prior_request: 1.0,
            ..Faults::default()
        };
        assert_eq!(
            draw(&prior, "route53", "ChangeResourceRecordSets", 0.5),
            Outcome::PriorRequestNotComplete
        );
        assert_eq!(
            draw(&prior, "route53", "GetChange", 0.5),
            Outcome::Forwarded
        );
    }

    #[test]
    fn every_call_sees_the_whole_fault_rate() {
        let faults = Faults::spread(0.2);
        for (service, action) in [
            ("ec2", "RunInstances"),
            ("route53", "ChangeResourceRecordSets"),
            ("route53", "CreateHealthCheck"),
        ] {
            let n: u32 = 200_000;
            let hit = (0..n)
                .filter(|_| draw(&faults, service, action, fastrand::f64()) != Outcome::Forwarded)
                .map(|_| 1.0)
                .sum::<f64>();
            let rate = hit / f64::from(n);
            assert!((0.19..0.21).contains(&rate), "{service}:{action}: {rate}");
        }
    }

    #[test]
    fn a_run_never_falls_below_half_the_rate_and_keeps_it_on_average() {
        let faults = Faults::spread(0.2);
        let mut hit = 0;
        for _ in 0..2_000 {
            let mut drawn = Drawn::default();
            let run: u32 = (1..=50)
                .map(|n| {
                    let faulted = drawn.next(&faults, "ec2", "RunInstances") != Outcome::Forwarded;
                    let half = faults.total() * f64::from(n) / 2.0;
                    assert!(f64::from(drawn.faults) >= half.floor(), "{n}: {drawn:?}");
                    u32::from(faulted)
                })
                .sum();
            assert!(run * 20 >= 50, "{run} faults in 50 calls");
            hit += run;
        }
        let rate = f64::from(hit) / 100_000.0;
        assert!((0.19..0.22).contains(&rate), "{rate}");
    }
}
