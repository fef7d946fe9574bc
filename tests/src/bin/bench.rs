//! `make bench`: shift-weight against the aws CLI doing the same job, side by
//! side in one run, against one local moto server; then verify-health against
//! `xargs -P 64 curl` probing the same 10,000 loopback endpoints.
//!
//! The job: a weighted A record group at blue=100,green=0 is set to
//! blue=50,green=50. shift-weight does it as one process (`--to green --weight
//! 50`); the aws CLI as two (`list-resource-record-sets`, then
//! `change-resource-record-sets` with one batch UPSERTing both records). Each
//! round resets the weights with the CLI outside the timed region, so every
//! timed run does the same real work from the same starting point; the order
//! of the two tools alternates from round to round. A timed region holds the
//! job's processes and nothing else (for the CLI also the few microseconds of
//! building the batch from the listed records, which a script would do with
//! jq, another process).
//!
//! Reported: median and minimum wall time, peak RSS (`ru_maxrss` from
//! `wait4`; for the CLI the larger of its two processes) and the ratios. The
//! exit code says whether every run did its job, never how fast it was.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use switchyard_tests::{steps, Moto};

const ZONE: &str = "bench.switchyard.test";
const RECORD: &str = "app.bench.switchyard.test";
const TTL: u32 = 60;
const DEFAULT_ROUNDS: usize = 10;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let rounds = rounds()?;
    let shift_weight = steps::bin_dir().join("shift-weight");
    ensure!(
        shift_weight.exists(),
        "{} is not built; run `cargo build --workspace --bins --release` first (make bench does)",
        shift_weight.display()
    );
    let work = WorkDir::new()?;
    eprintln!("starting moto_server");
    let moto = Moto::start_direct()?;
    let env = moto.env();
    let bench = Bench {
        env: &env,
        work: &work.0,
    };

    let zone_id = bench.create_zone()?;
    bench.cli_ok(
        "create the record group",
        &change_batch_args(&zone_id, &initial_batch()),
    )?;
    eprintln!(
        "zone {ZONE} ({zone_id}), {RECORD} A: blue=100,green=0, TTL {TTL}; {rounds} rounds, \
         one untimed warm-up of each tool first"
    );

    // Warm-up: the first run of each tool pays for cold caches.
    bench.reset(&zone_id)?;
    bench.shift_weight_job(&zone_id, 0)?;
    bench.reset(&zone_id)?;
    bench.cli_job(&zone_id)?;

    let mut ours = Vec::with_capacity(rounds);
    let mut theirs = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let shift_weight_first = round % 2 == 1;
        for shift_weight_turn in [shift_weight_first, !shift_weight_first] {
            bench.reset(&zone_id)?;
            if shift_weight_turn {
                ours.push(bench.shift_weight_job(&zone_id, round)?);
            } else {
                theirs.push(bench.cli_job(&zone_id)?);
            }
        }
        eprintln!(
            "round {round}/{rounds}: shift-weight {}, aws CLI {}",
            ms(ours[round - 1].wall),
            ms(theirs[round - 1].wall)
        );
    }

    let weights = bench.read_weights(&zone_id)?;
    ensure!(
        weights == [("blue".to_owned(), 50), ("green".to_owned(), 50)],
        "after the last run the aws CLI reads {weights:?}, expected blue=50, green=50"
    );

    report(&moto.endpoint(), rounds, &ours, &theirs);
    drop(moto);
    health_bench(&work.0)
}

/// verify-health against `xargs -P 64 curl` making the same probes: N
/// endpoints (default 10,000; `BENCH_ENDPOINTS`) served on loopback by one
/// small async server, one fresh connection per probe, side by side in one run.
fn health_bench(work: &Path) -> Result<()> {
    let count: usize = match std::env::var("BENCH_ENDPOINTS") {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("BENCH_ENDPOINTS={text:?} is not a number"))?,
        Err(_) => 10_000,
    };
    ensure!(count >= 1, "BENCH_ENDPOINTS must be at least 1");
    let farm = switchyard_tests::http_farm::HttpFarm::start(16)?;
    let urls = farm.urls(count);
    let file = work.join("urls.txt");
    std::fs::write(&file, urls.join("\n") + "\n")?;
    eprintln!("\n{count} endpoints on 16 loopback listeners; verify-health 3 runs, then xargs -P 64 curl once");

    let ours_cmd = || {
        let mut cmd = steps::step("verify-health", &[]);
        cmd.arg("--urls-file")
            .arg(&file)
            .args([
                "--successes",
                "1",
                "--failures",
                "1",
                "--attempts",
                "1",
                "--concurrency",
                "256",
            ])
            .args(["--output", "json", "-q"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd
    };
    let mut ours = Vec::new();
    for run in 1..=3 {
        let started = Instant::now();
        let mut child = ours_cmd().spawn().context("cannot start verify-health")?;
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut out)?;
        }
        let (status, rss) = wait_with_peak_rss(child.id())?;
        let wall = started.elapsed();
        let status = ExitStatus::from_raw(status);
        ensure!(
            status.success(),
            "verify-health run {run} ended with {status}"
        );
        let report: Value =
            serde_json::from_str(out.trim()).context("verify-health printed no JSON")?;
        ensure!(
            report["probes"]["healthy"] == count,
            "verify-health run {run} found {} of {count} healthy",
            report["probes"]["healthy"]
        );
        eprintln!("verify-health run {run}: {}", ms(wall));
        ours.push(Sample {
            wall,
            max_rss_kib: rss,
        });
    }

    let (curl_wall, curl_rss) = curl_pipeline(&file, work, count)?;
    eprintln!("xargs -P 64 curl: {}", ms(curl_wall));

    let our_median = median(&ours);
    let our_rss = ours.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
    println!();
    println!("{count} HTTP endpoints on loopback, one fresh connection per probe, the server sharing the 2 cores");
    println!();
    println!("{:<40} {:>10} {:>12}", "tool", "wall", "peak RSS");
    println!(
        "{:<40} {:>10} {:>12}",
        "verify-health (median of 3)",
        ms(our_median),
        mib(our_rss)
    );
    println!(
        "{:<40} {:>10} {:>12}",
        "xargs -P 64 curl (largest process)",
        ms(curl_wall),
        mib(curl_rss)
    );
    println!();
    println!(
        "verify-health is {:.1}x faster than the curl pipeline; {} endpoints in {:.2} s; {} requests served in all",
        curl_wall.as_secs_f64() / our_median.as_secs_f64(),
        count,
        our_median.as_secs_f64(),
        farm.served()
    );
    Ok(())
}

/// The same probes by `xargs -P 64 curl`, one process per probe.
fn curl_pipeline(file: &Path, work: &Path, count: usize) -> Result<(Duration, u64)> {
    let script = format!(
        "xargs -P 64 -n 1 curl -s -o /dev/null --max-time 5 -w '%{{http_code}}\\n' < '{}' > '{}'",
        file.display(),
        work.join("curl.out").display()
    );
    let started = Instant::now();
    let child = Command::new("bash")
        .args(["-c", &script])
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start bash with xargs and curl")?;
    let (status, curl_rss) = wait_with_peak_rss(child.id())?;
    let curl_wall = started.elapsed();
    ensure!(
        ExitStatus::from_raw(status).success(),
        "the curl pipeline failed"
    );
    let ok = std::fs::read_to_string(work.join("curl.out"))?
        .lines()
        .filter(|l| *l == "200")
        .count();
    ensure!(ok == count, "curl saw {ok} of {count} answer 200");
    Ok((curl_wall, curl_rss))
}

fn rounds() -> Result<usize> {
    match std::env::var("BENCH_ROUNDS") {
        Ok(text) => {
            let n: usize = text
                .trim()
                .parse()
                .with_context(|| format!("BENCH_ROUNDS={text:?} is not a number"))?;
            ensure!(n >= 1, "BENCH_ROUNDS must be at least 1");
            Ok(n)
        }
        Err(_) => Ok(DEFAULT_ROUNDS),
    }
}

/// One timed job: its wall time and the largest peak RSS of its processes.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    max_rss_kib: u64,
}

struct Bench<'a> {
    env: &'a [(String, String)],
    work: &'a Path,
}

impl Bench<'_> {
    /// shift-weight, one process, from blue=100,green=0 to 50/50; a fresh state file each run.
    fn shift_weight_job(&self, zone_id: &str, round: usize) -> Result<Sample> {
        let state = self.work.join(format!("state-{round}.json"));
        let _ = std::fs::remove_file(&state);
        let mut cmd = steps::step("shift-weight", self.env);
        cmd.args(["--zone-id", zone_id, "--record-name", RECORD])
            .args(["--to", "green", "--weight", "50", "--force", "--state"])
            .arg(&state);
        let started = Instant::now();
        let (status, rss) = self.spawn_and_wait(&mut cmd, "shift-weight")?;
        let wall = started.elapsed();
        self.check(status, "shift-weight", "shift-weight")?;
        Ok(Sample {
            wall,
            max_rss_kib: rss,
        })
    }

    /// The aws CLI, two processes: read the group, then one batch UPSERTing both records.
    fn cli_job(&self, zone_id: &str) -> Result<Sample> {
        let started = Instant::now();
        let (status, rss_list) = self.spawn_and_wait(&mut self.cli(&list_args(zone_id)), "aws")?;
        self.check(status, "aws", "aws route53 list-resource-record-sets")?;
        let listed = read_json(&self.work.join("aws.out"))?;
        let batch = upsert_weights(&listed, &[("blue", 50), ("green", 50)])?;
        let (status, rss_change) =
            self.spawn_and_wait(&mut self.cli(&change_batch_args(zone_id, &batch)), "aws")?;
        let wall = started.elapsed();
        self.check(status, "aws", "aws route53 change-resource-record-sets")?;
        Ok(Sample {
            wall,
            max_rss_kib: rss_list.max(rss_change),
        })
    }

    /// Back to blue=100,green=0 (untimed).
    fn reset(&self, zone_id: &str) -> Result<()> {
        let listed = self.cli_ok("list the records", &list_args(zone_id))?;
        let batch = upsert_weights(&listed, &[("blue", 100), ("green", 0)])?;
        self.cli_ok("reset the weights", &change_batch_args(zone_id, &batch))?;
        Ok(())
    }

    fn create_zone(&self) -> Result<String> {
        let reference = format!("switchyard-bench-{}", std::process::id());
        let out = self.cli_ok(
            "create the hosted zone",
            &[
                "route53",
                "create-hosted-zone",
                "--name",
                ZONE,
                "--caller-reference",
                &reference,
                "--output",
                "json",
            ],
        )?;
        let id = out["HostedZone"]["Id"]
            .as_str()
            .context("create-hosted-zone answered without HostedZone.Id")?;
        Ok(id.trim_start_matches("/hostedzone/").to_owned())
    }

    /// The weights of the group as the aws CLI reads them, by set identifier.
    fn read_weights(&self, zone_id: &str) -> Result<Vec<(String, i64)>> {
        let listed = self.cli_ok("read the weights", &list_args(zone_id))?;
        let mut weights: Vec<(String, i64)> = group(&listed)?
            .iter()
            .filter_map(|set| {
                Some((
                    set["SetIdentifier"].as_str()?.to_owned(),
                    set["Weight"].as_i64()?,
                ))
            })
            .collect();
        weights.sort();
        Ok(weights)
    }

    /// Runs the aws CLI untimed and returns its JSON answer.
    fn cli_ok(&self, what: &str, args: &[&str]) -> Result<Value> {
        let (status, _) = self.spawn_and_wait(&mut self.cli(args), "aws")?;
        self.check(status, "aws", &format!("aws CLI ({what})"))?;
        read_json(&self.work.join("aws.out"))
    }

    fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("aws");
        cmd.env_clear();
        for key in ["PATH", "HOME", "TMPDIR", "PYENV_ROOT", "PYENV_VERSION"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v))).args(args);
        cmd
    }

    /// Spawns `cmd` with stdout and stderr in files named after `name`, and
    /// waits for it; returns how it ended and its peak RSS in KiB.
    fn spawn_and_wait(&self, cmd: &mut Command, name: &str) -> Result<(ExitStatus, u64)> {
        let stdout = File::create(self.work.join(format!("{name}.out")))?;
        let stderr = File::create(self.work.join(format!("{name}.err")))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let (raw, rss) =
            wait_with_peak_rss(child.id()).with_context(|| format!("cannot wait for {name}"))?;
        Ok((ExitStatus::from_raw(raw), rss))
    }

    /// Fails unless process `name` exited 0, showing what it wrote to stderr.
    fn check(&self, status: ExitStatus, name: &str, what: &str) -> Result<()> {
        if status.success() {
            return Ok(());
        }
        let stderr =
            std::fs::read_to_string(self.work.join(format!("{name}.err"))).unwrap_or_default();
        bail!(
            "{what} ended with {status} (expected exit 0):\n{}",
            stderr.trim_end()
        )
    }
}

/// Waits for the child `pid` to end; returns its raw wait status and its peak
/// resident set size in KiB (`ru_maxrss`).
#[allow(unsafe_code)]
fn wait_with_peak_rss(pid: u32) -> std::io::Result<(i32, u64)> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::other(format!("pid {pid} out of range")))?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct of integers, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers point to live, writable locals for the whole call;
        // `pid` is a child this process spawned and has not yet waited for, so
        // wait4 reaps exactly that child and no other.
        let got = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
        if got == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok((status, u64::try_from(usage.ru_maxrss).unwrap_or(0)))
}

fn list_args(zone_id: &str) -> Vec<&str> {
    vec![
        "route53",
        "list-resource-record-sets",
        "--hosted-zone-id",
        zone_id,
        "--start-record-name",
        RECORD,
        "--start-record-type",
        "A",
        "--output",
        "json",
    ]
}

fn change_batch_args<'a>(zone_id: &'a str, batch: &'a str) -> Vec<&'a str> {
    vec![
        "route53",
        "change-resource-record-sets",
        "--hosted-zone-id",
        zone_id,
        "--change-batch",
        batch,
        "--output",
        "json",
    ]
}

fn initial_batch() -> String {
    let set = |id: &str, weight: u32, address: &str| {
        json!({
            "Action": "CREATE",
            "ResourceRecordSet": {
                "Name": RECORD, "Type": "A", "SetIdentifier": id, "Weight": weight,
                "TTL": TTL, "ResourceRecords": [{"Value": address}],
            }
        })
    };
    json!({
        "Comment": "switchyard bench",
        "Changes": [set("blue", 100, "192.0.2.10"), set("green", 0, "192.0.2.20")],
    })
    .to_string()
}

/// The record sets of the benchmarked group in a ListResourceRecordSets answer.
fn group(listed: &Value) -> Result<Vec<&Value>> {
    let sets = listed["ResourceRecordSets"]
        .as_array()
        .context("list-resource-record-sets answered without ResourceRecordSets")?;
    let wanted = format!("{RECORD}.");
    Ok(sets
        .iter()
        .filter(|s| s["Name"].as_str() == Some(wanted.as_str()) && s["Type"] == "A")
        .collect())
}

/// One change batch UPSERTing each named record set, as listed, with a new weight.
fn upsert_weights(listed: &Value, weights: &[(&str, u32)]) -> Result<String> {
    let sets = group(listed)?;
    let mut changes = Vec::with_capacity(weights.len());
    for (id, weight) in weights {
        let mut set = (*sets
            .iter()
            .find(|s| s["SetIdentifier"].as_str() == Some(id))
            .with_context(|| format!("no record set {id} in the group"))?)
        .clone();
        set["Weight"] = json!(weight);
        changes.push(json!({"Action": "UPSERT", "ResourceRecordSet": set}));
    }
    Ok(json!({"Comment": "aws CLI bench", "Changes": changes}).to_string())
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

fn report(endpoint: &str, rounds: usize, ours: &[Sample], theirs: &[Sample]) {
    let (our_median, their_median) = (median(ours), median(theirs));
    let our_rss = ours.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
    let their_rss = theirs.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
    println!();
    println!(
        "Route53 weighted record group, blue=100,green=0 -> blue=50,green=50, \
         against moto_server at {endpoint}; {rounds} rounds, interleaved"
    );
    println!();
    println!(
        "{:<40} {:>10} {:>10} {:>12}",
        "tool", "median", "min", "peak RSS"
    );
    for (name, samples, median, rss) in [
        ("shift-weight (1 process)", ours, our_median, our_rss),
        (
            "aws CLI (list + change, 2 processes)",
            theirs,
            their_median,
            their_rss,
        ),
    ] {
        let min = samples.iter().map(|s| s.wall).min().unwrap_or_default();
        println!(
            "{name:<40} {:>10} {:>10} {:>12}",
            ms(median),
            ms(min),
            mib(rss)
        );
    }
    println!();
    println!(
        "shift-weight is {:.1}x faster (median wall time) and uses {:.1}x less memory (peak RSS)",
        their_median.as_secs_f64() / our_median.as_secs_f64(),
        kib_f64(their_rss) / kib_f64(our_rss).max(1.0)
    );
    println!(
        "(shift-weight also takes and releases its Route53 lease, reads the weights back \
         and journals to its state file; the CLI pair does none of that)"
    );
}

fn median(samples: &[Sample]) -> Duration {
    let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
    walls.sort();
    match walls.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => walls[n / 2],
        n => (walls[n / 2 - 1] + walls[n / 2]) / 2,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn kib_f64(kib: u64) -> f64 {
    f64::from(u32::try_from(kib).unwrap_or(u32::MAX))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib_f64(kib) / 1024.0)
}

/// A folder of its own under the system temp folder, removed at the end.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("switchyard-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
