//! `make bench`: shift-weight against the aws CLI doing the same job, side by
//! side in one run, against one local moto server; then verify-health against
//! `xargs -P 64 curl` probing the same 10,000 loopback endpoints; then the
//! time from a failing gate to traffic back on the old stack for the HAProxy
//! and ALB routers (see [`rollback`]).
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
    match run().and_then(|()| bake_bench()) {
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
    health_bench(&work.0)?;
    rollback::bench(&work.0)
}

/// verify-health against `xargs -P 64 curl` making the same probes: N
/// endpoints (default 10,000; `BENCH_ENDPOINTS`) served on loopback by one
/// small async server, one fresh connection per probe, side by side in one run.
fn health_bench(work: &Path) -> Result<()> {
    let count = count_from_env("BENCH_ENDPOINTS", 10_000)?;
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
    let ab = apache_bench(&urls[0], count)?;
    eprintln!("ab -n {count} -c 64: {}", ms(ab.wall));

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
        format!("ab -n {count} -c 64 (one URL)"),
        ms(ab.wall),
        mib(ab.max_rss_kib)
    );
    println!(
        "{:<40} {:>10} {:>12}",
        "xargs -P 64 curl (largest process)",
        ms(curl_wall),
        mib(curl_rss)
    );
    println!();
    println!(
        "verify-health / ApacheBench: {:.2}x ApacheBench's speed (>= 1.0 is as fast or faster)",
        ab.wall.as_secs_f64() / our_median.as_secs_f64()
    );
    println!(
        "verify-health is {:.1}x faster than the curl pipeline; {} endpoints in {:.2} s; {} requests served in all",
        curl_wall.as_secs_f64() / our_median.as_secs_f64(),
        count,
        our_median.as_secs_f64(),
        farm.served()
    );
    Ok(())
}

/// ApacheBench (C, fresh connections, no keep-alive) making the same number
/// of requests, 64 at a time, to one of the same listeners.
fn apache_bench(url: &str, count: usize) -> Result<Sample> {
    let started = Instant::now();
    let child = Command::new("ab")
        .args(["-q", "-n", &count.to_string(), "-c", "64", url])
        .env_remove("http_proxy")
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start ab (apache2-utils; make deps installs it)")?;
    let (status, rss) = wait_with_peak_rss(child.id())?;
    let wall = started.elapsed();
    ensure!(ExitStatus::from_raw(status).success(), "ab failed");
    Ok(Sample {
        wall,
        max_rss_kib: rss,
    })
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
    count_from_env("BENCH_ROUNDS", DEFAULT_ROUNDS)
}

/// The count in environment variable `name` (at least 1), or `default` when it is unset.
fn count_from_env(name: &str, default: usize) -> Result<usize> {
    let Ok(text) = std::env::var(name) else {
        return Ok(default);
    };
    let n: usize = text
        .trim()
        .parse()
        .with_context(|| format!("{name}={text:?} is not a number"))?;
    ensure!(n >= 1, "{name} must be at least 1");
    Ok(n)
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

/// bake-ami against the aws CLI making the same EC2 calls, in one run against
/// one moto server: resolve the base image by name, launch the builder
/// (shutdown stops it, IMDSv2 required, tagged), wait until it is stopped,
/// read its console, create the image with no reboot, wait until available,
/// tag it and its snapshot, copy it to a second region, tag and wait for the
/// copy, mark everything complete, terminate the builder.
///
/// moto's instances never stop by themselves, so a background thread stops
/// every running builder as soon as it appears (raw EC2 query calls to moto,
/// a few hundred microseconds each), as the provisioning script's poweroff
/// would. The time spent waiting for that stop is not the tool's: it is taken
/// out on both sides (bake-ami reports it as `timings.waited_for_builder_ms`;
/// the CLI's `wait instance-stopped` process is left out of its timed total).
/// Each round runs bake-ami with `--force` (a full bake, not a reuse), and
/// the two tools alternate going first. One more bake-ami run without
/// `--force` times the reuse path (nothing launched). Rounds: BENCH_BAKE_ROUNDS,
/// default 3.
fn bake_bench() -> Result<()> {
    let work_dir = WorkDir::new()?;
    let work = work_dir.0.as_path();
    let rounds = count_from_env("BENCH_BAKE_ROUNDS", 3)?;
    let moto = Moto::start_direct()?;
    let env = moto.env();
    let bench = Bench { env: &env, work };
    let registered = bench.cli_ok(
        "register the base image",
        &[
            "ec2",
            "register-image",
            "--name",
            "bench-base-2026.01",
            "--root-device-name",
            "/dev/xvda",
            "--block-device-mappings",
            r#"[{"DeviceName":"/dev/xvda","Ebs":{"VolumeSize":8}}]"#,
            "--output",
            "json",
        ],
    )?;
    ensure!(
        registered["ImageId"].is_string(),
        "register-image answered {registered}"
    );
    let script = work.join("provision.sh");
    std::fs::write(
        &script,
        "#!/bin/bash\nset -euo pipefail\napt-get update -q && apt-get upgrade -y -q && apt-get install -y -q docker.io\n\
         docker pull ghcr.io/acme/go-auth:1.4.2\necho 'Enabling fast FPU save and restore... done.'\npoweroff\n",
    )?;
    let stopper = BuilderStopper::start(&moto.endpoint())?;
    eprintln!(
        "\nbake: base image bench-base-2026.01, copy to eu-west-1; {rounds} rounds, one untimed warm-up of each tool first"
    );
    bench.bake_ami_job(&script, true, 0)?;
    bench.cli_bake_job(&script, 0)?;
    let mut ours = Vec::with_capacity(rounds);
    let mut theirs = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let ours_first = round % 2 == 1;
        for our_turn in [ours_first, !ours_first] {
            if our_turn {
                ours.push(bench.bake_ami_job(&script, true, round)?);
            } else {
                theirs.push(bench.cli_bake_job(&script, round)?);
            }
        }
        eprintln!(
            "round {round}/{rounds}: bake-ami {} (of {} wall), aws CLI {}",
            ms(ours[round - 1].wall),
            ms(ours[round - 1].wall + ours[round - 1].waited),
            ms(theirs[round - 1].wall)
        );
    }
    let reuse = bench.bake_ami_job(&script, false, rounds + 1)?;
    stopper.stop();

    bake_report(rounds, &ours, &theirs, &reuse);
    Ok(())
}

fn bake_report(rounds: usize, ours: &[BakeSample], theirs: &[BakeSample], reuse: &BakeSample) {
    let (our_median, their_median) = (
        median_of(ours.iter().map(|s| s.wall)),
        median_of(theirs.iter().map(|s| s.wall)),
    );
    let our_rss = ours.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
    let their_rss = theirs.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
    let waited = median_of(ours.iter().map(|s| s.waited));
    println!();
    println!(
        "A full bake (launch, stop, console, create image, copy to a second region, tags, terminate) \
         against moto_server; {rounds} rounds, interleaved; the wait for the simulated poweroff left out"
    );
    println!();
    println!("{:<50} {:>10} {:>12}", "tool", "median", "peak RSS");
    println!(
        "{:<50} {:>10} {:>12}",
        "bake-ami --force (1 process)",
        ms(our_median),
        mib(our_rss)
    );
    let processes = theirs.iter().map(|s| s.processes).max().unwrap_or(0);
    println!(
        "{:<50} {:>10} {:>12}",
        format!("aws CLI ({processes} timed processes)"),
        ms(their_median),
        mib(their_rss)
    );
    println!(
        "{:<50} {:>10} {:>12}",
        "bake-ami, reuse by input hash (nothing launched)",
        ms(reuse.wall),
        mib(reuse.max_rss_kib)
    );
    println!();
    println!(
        "bake-ami is {:.1}x faster than the same calls made with the aws CLI (median, excluding \
         the {} bake-ami spent waiting for the builder to stop, polling with backoff)",
        their_median.as_secs_f64() / our_median.as_secs_f64(),
        ms(waited)
    );
    println!(
        "(bake-ami also checks the source image and the reuse, journals to its state file and \
         polls each wait; the CLI sequence does none of that)"
    );
}

/// One timed bake: wall time without the wait for the builder to stop.
#[derive(Debug, Clone, Copy)]
struct BakeSample {
    wall: Duration,
    waited: Duration,
    max_rss_kib: u64,
    /// The processes it took.
    processes: usize,
}

impl Bench<'_> {
    /// bake-ami, one process; `force` makes it a full bake.
    fn bake_ami_job(&self, script: &Path, force: bool, round: usize) -> Result<BakeSample> {
        let state = self.work.join(format!("bake-state-{round}.json"));
        let _ = std::fs::remove_file(&state);
        let mut cmd = steps::step("bake-ami", self.env);
        cmd.args(["--service", "go-auth", "--app-version", "1.4.2"])
            .args(["--source-name", "bench-base-*", "--owner", "self"])
            .arg("--user-data")
            .arg(script)
            .args([
                "--success-marker",
                "Enabling fast FPU save and restore... done.",
            ])
            .args(["--copy-to", "eu-west-1", "--output", "json", "--no-hooks"])
            .arg("--state")
            .arg(&state);
        if force {
            cmd.arg("--force");
        }
        let started = Instant::now();
        let (status, rss) = self.spawn_and_wait(&mut cmd, "bake-ami")?;
        let wall = started.elapsed();
        self.check(status, "bake-ami", "bake-ami")?;
        let report = read_json(&self.work.join("bake-ami.out"))?;
        ensure!(
            report["reused"] == !force,
            "bake-ami reused={} with force={force}",
            report["reused"]
        );
        ensure!(
            report["amis"]["eu-west-1"].is_string(),
            "bake-ami made no copy: {report}"
        );
        let waited = Duration::from_millis(
            report["timings"]["waited_for_builder_ms"]
                .as_u64()
                .context("bake-ami reported no timings")?,
        );
        Ok(BakeSample {
            wall: wall.saturating_sub(waited),
            waited,
            max_rss_kib: rss,
            processes: 1,
        })
    }

    /// The same calls with the aws CLI, one process each; the wait for the
    /// simulated poweroff is not timed.
    // The CLI's script reads best as one sequence, as a shell script would.
    #[allow(clippy::too_many_lines)]
    fn cli_bake_job(&self, script: &Path, round: usize) -> Result<BakeSample> {
        let mut timed = Duration::ZERO;
        let mut rss = 0;
        let mut processes = 0;
        let mut step = |what: &str, args: &[&str]| -> Result<Value> {
            processes += 1;
            let started = Instant::now();
            let (status, peak) = self.spawn_and_wait(&mut self.cli(args), "aws")?;
            timed += started.elapsed();
            rss = rss.max(peak);
            self.check(status, "aws", &format!("aws CLI ({what})"))?;
            read_json_or_null(&self.work.join("aws.out"))
        };
        let tags = format!(
            "{{Key=switchyard:purpose,Value=bake}},{{Key=switchyard:bake-id,Value=cli-{round}}}"
        );
        let images = step(
            "find the base image",
            &[
                "ec2",
                "describe-images",
                "--owners",
                "self",
                "--filters",
                "Name=name,Values=bench-base-*",
                "Name=state,Values=available",
                "--output",
                "json",
            ],
        )?;
        let base = images["Images"][0]["ImageId"]
            .as_str()
            .context("no base image")?
            .to_owned();
        let user_data = format!("file://{}", script.display());
        let launched = step(
            "run-instances",
            &[
                "ec2",
                "run-instances",
                "--image-id",
                &base,
                "--instance-type",
                "t3.small",
                "--count",
                "1",
                "--instance-initiated-shutdown-behavior",
                "stop",
                "--metadata-options",
                "HttpTokens=required,HttpEndpoint=enabled",
                "--user-data",
                &user_data,
                "--tag-specifications",
                &format!("ResourceType=instance,Tags=[{tags}]"),
                &format!("ResourceType=volume,Tags=[{tags}]"),
                "--output",
                "json",
            ],
        )?;
        let builder = launched["Instances"][0]["InstanceId"]
            .as_str()
            .context("run-instances answered without an instance")?
            .to_owned();
        // The simulated poweroff: not the tool's time.
        self.cli_ok(
            "wait instance-stopped",
            &[
                "ec2",
                "wait",
                "instance-stopped",
                "--instance-ids",
                &builder,
            ],
        )
        .or_else(|_| Ok::<Value, anyhow::Error>(Value::Null))?;
        let console = step(
            "get-console-output",
            &[
                "ec2",
                "get-console-output",
                "--instance-id",
                &builder,
                "--output",
                "json",
            ],
        )?;
        ensure!(
            console["Output"]
                .as_str()
                .is_some_and(|o| o.contains("fast FPU save")),
            "no marker in the console output"
        );
        let name = format!("cli-bake-{round}-{}", std::process::id());
        let created = step(
            "create-image",
            &[
                "ec2",
                "create-image",
                "--instance-id",
                &builder,
                "--name",
                &name,
                "--no-reboot",
                "--tag-specifications",
                &format!("ResourceType=image,Tags=[{tags}]"),
                "--output",
                "json",
            ],
        )?;
        let image = created["ImageId"]
            .as_str()
            .context("no image id")?
            .to_owned();
        step(
            "wait image-available",
            &["ec2", "wait", "image-available", "--image-ids", &image],
        )?;
        let home_snapshot = snapshot_of(&step(
            "describe-images",
            &[
                "ec2",
                "describe-images",
                "--image-ids",
                &image,
                "--output",
                "json",
            ],
        )?)?;
        step(
            "tag the snapshot",
            &[
                "ec2",
                "create-tags",
                "--resources",
                &home_snapshot,
                "--tags",
                "Key=switchyard:bake-id,Value=cli",
            ],
        )?;
        let copied = step(
            "copy-image",
            &[
                "ec2",
                "copy-image",
                "--region",
                "eu-west-1",
                "--source-region",
                "us-east-1",
                "--source-image-id",
                &image,
                "--name",
                &name,
                "--output",
                "json",
            ],
        )?;
        let copy = copied["ImageId"].as_str().context("no copy id")?.to_owned();
        step(
            "tag the copy",
            &[
                "ec2",
                "create-tags",
                "--region",
                "eu-west-1",
                "--resources",
                &copy,
                "--tags",
                "Key=switchyard:bake-id,Value=cli",
            ],
        )?;
        step(
            "wait for the copy",
            &[
                "ec2",
                "wait",
                "image-available",
                "--region",
                "eu-west-1",
                "--image-ids",
                &copy,
            ],
        )?;
        let copy_snapshot = snapshot_of(&step(
            "describe the copy",
            &[
                "ec2",
                "describe-images",
                "--region",
                "eu-west-1",
                "--image-ids",
                &copy,
                "--output",
                "json",
            ],
        )?)?;
        step(
            "tag the copy's snapshot",
            &[
                "ec2",
                "create-tags",
                "--region",
                "eu-west-1",
                "--resources",
                &copy_snapshot,
                "--tags",
                "Key=switchyard:bake-id,Value=cli",
            ],
        )?;
        step(
            "mark complete",
            &[
                "ec2",
                "create-tags",
                "--resources",
                &image,
                &home_snapshot,
                "--tags",
                "Key=switchyard:bake-status,Value=complete",
            ],
        )?;
        step(
            "mark the copy complete",
            &[
                "ec2",
                "create-tags",
                "--region",
                "eu-west-1",
                "--resources",
                &copy,
                &copy_snapshot,
                "--tags",
                "Key=switchyard:bake-status,Value=complete",
            ],
        )?;
        step(
            "terminate-instances",
            &[
                "ec2",
                "terminate-instances",
                "--instance-ids",
                &builder,
                "--output",
                "json",
            ],
        )?;
        // bake-ami ends by looking for twins of its builder and image (a call
        // sent again after its answer was lost): the same four reads.
        let this_bake = format!("Name=tag:switchyard:bake-id,Values=cli-{round}");
        let in_progress = "Name=tag:switchyard:bake-status,Values=in-progress";
        for (what, args) in [
            (
                "twin builders",
                vec![
                    "ec2",
                    "describe-instances",
                    "--filters",
                    "Name=tag:switchyard:purpose,Values=bake",
                    "Name=instance-state-name,Values=pending,running,stopping,stopped",
                    &this_bake,
                ],
            ),
            (
                "twin images",
                vec![
                    "ec2",
                    "describe-images",
                    "--owners",
                    "self",
                    "--filters",
                    in_progress,
                    &this_bake,
                ],
            ),
            (
                "the bake's images",
                vec![
                    "ec2",
                    "describe-images",
                    "--owners",
                    "self",
                    "--filters",
                    &this_bake,
                ],
            ),
            (
                "twin snapshots",
                vec![
                    "ec2",
                    "describe-snapshots",
                    "--owner-ids",
                    "self",
                    "--filters",
                    in_progress,
                    &this_bake,
                ],
            ),
        ] {
            let mut args = args;
            args.extend(["--output", "json"]);
            step(what, &args)?;
        }
        Ok(BakeSample {
            wall: timed,
            waited: Duration::ZERO,
            max_rss_kib: rss,
            processes,
        })
    }
}

fn snapshot_of(described: &Value) -> Result<String> {
    Ok(
        described["Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
            .as_str()
            .context("the image has no snapshot")?
            .to_owned(),
    )
}

fn read_json_or_null(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

fn median_of(values: impl Iterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = values.collect();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// Stops every running bake builder on a moto server as soon as it appears,
/// from a thread, with raw EC2 query calls (moto does not check signatures).
struct BuilderStopper {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BuilderStopper {
    fn start(endpoint: &str) -> Result<Self> {
        let addr: std::net::SocketAddr = endpoint
            .trim_start_matches("http://")
            .parse()
            .context("moto's endpoint is not host:port")?;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let found = ec2_query(
                    addr,
                    "Action=DescribeInstances&Version=2016-11-15\
                     &Filter.1.Name=tag%3Aswitchyard%3Apurpose&Filter.1.Value.1=bake\
                     &Filter.2.Name=instance-state-name&Filter.2.Value.1=running",
                )
                .unwrap_or_default();
                for id in found
                    .split("<instanceId>")
                    .skip(1)
                    .filter_map(|rest| rest.split('<').next())
                {
                    let _ = ec2_query(
                        addr,
                        &format!("Action=StopInstances&Version=2016-11-15&InstanceId.1={id}"),
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Ok(Self {
            done,
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One EC2 query-protocol call to moto in us-east-1; the answer's body.
fn ec2_query(addr: std::net::SocketAddr, body: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST / HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, \
         SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}
/// The time from a failing gate verdict to traffic fully back on the old
/// stack, for the HAProxy and ALB routers: the tool's own time, read from the
/// journal it writes (the failed gate's entry to the rollback's read-back
/// entry), over several rounds; and the wall time of a separate
/// `shift-weight --rollback` process, with the part from its decision to
/// its read-back (journal) beside it.
mod rollback {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use anyhow::{ensure, Context, Result};
    use serde_json::Value;
    use switchyard_tests::haproxy::{Haproxy, Server, BACKEND};
    use switchyard_tests::health_server::Behaviour;
    use switchyard_tests::load::{Load, VersionServer};
    use switchyard_tests::{steps, HealthServer, Moto};

    const ROUNDS: usize = 5;

    /// One router's figures.
    struct Figures {
        in_shift: Vec<Duration>,
        process: Vec<Duration>,
        process_decided: Vec<Duration>,
    }

    pub fn bench(work: &Path) -> Result<()> {
        eprintln!("\nrollback: HAProxy on loopback under 1,000 requests/s, then an ALB listener on moto; {ROUNDS} rounds each");
        let (haproxy, failures, requests) = haproxy_rounds(work)?;
        let alb = alb_rounds(work)?;
        let route53 = route53_rounds(work)?;
        println!();
        println!("Rollback after a failing gate: from the gate's verdict to the rollback's read-back (the tool's own time, from its journal)");
        println!();
        println!(
            "{:<10} {:>18} {:>18} {:>22} {:>26}",
            "router",
            "in-shift median",
            "in-shift max",
            "--rollback process",
            "--rollback decision->back"
        );
        for (name, f) in [
            ("haproxy", &haproxy),
            ("alb", &alb),
            ("route53 x5", &route53),
        ] {
            println!(
                "{name:<10} {:>18} {:>18} {:>22} {:>26}",
                super::ms(median(&f.in_shift)),
                super::ms(f.in_shift.iter().copied().max().unwrap_or_default()),
                super::ms(median(&f.process)),
                super::ms(median(&f.process_decided)),
            );
        }
        println!();
        println!(
            "haproxy: {requests} requests during its rounds, {failures} failed; its times include draining green's \
             sessions and putting green in maint. A --rollback process also starts, reads the state, takes and releases \
             the lease (for alb a tag, confirmed after its 1 s write limit) and journals."
        );
        println!(
            "route53 x5: a weighted group of five members (blue=100, four at 0) on moto, shifted to green and back, \
             while the machine serves 1,000 requests/s to another server; settle 0 s, GetChange skipped when INSYNC."
        );
        let worst = haproxy
            .in_shift
            .iter()
            .chain(&alb.in_shift)
            .chain(&route53.in_shift)
            .copied()
            .max()
            .unwrap_or_default();
        println!(
            "target under 1 s: {} (worst in-shift rollback {})",
            if worst < Duration::from_secs(1) {
                "met"
            } else {
                "MISSED"
            },
            super::ms(worst)
        );
        Ok(())
    }

    fn median(v: &[Duration]) -> Duration {
        let mut v = v.to_vec();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }

    /// A gate healthy before any change and at step 1, failing at step 2.
    fn gate() -> Result<HealthServer> {
        HealthServer::with(Behaviour {
            script: vec![true, true, false],
            ..Behaviour::default()
        })
    }

    fn gate_args(url: &str) -> Vec<String> {
        [
            "--to",
            "green",
            "--steps",
            "10,50,100",
            "--gate-url",
            url,
            "--gate-successes",
            "1",
            "--gate-failures",
            "1",
            "--gate-interval",
            "50ms",
            "-q",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    fn journal(state: &Path) -> Result<Vec<(String, String, chrono::DateTime<chrono::Utc>)>> {
        let doc: Value = serde_json::from_slice(&std::fs::read(state)?)?;
        doc["journal"]
            .as_array()
            .context("no journal in the state")?
            .iter()
            .map(|e| {
                Ok((
                    e["action"].as_str().unwrap_or_default().to_owned(),
                    e["outcome"].as_str().unwrap_or_default().to_owned(),
                    e["at"].as_str().unwrap_or_default().parse()?,
                ))
            })
            .collect()
    }

    /// Time from the entry matching `from` to the next read-back after it.
    fn span(state: &Path, from: impl Fn(&str, &str) -> bool) -> Result<Duration> {
        let entries = journal(state)?;
        let start = entries
            .iter()
            .rposition(|(a, o, _)| from(a, o))
            .context("no starting entry in the journal")?;
        let end = entries[start..]
            .iter()
            .find(|(a, _, _)| a == "weights-verified")
            .context("no read-back after it in the journal")?;
        Ok((end.2 - entries[start].2).to_std().unwrap_or_default())
    }

    fn run_step(args: &[String], env: &[(String, String)], expect: i32) -> Result<Duration> {
        let mut cmd = steps::step("shift-weight", env);
        cmd.args(args);
        let started = Instant::now();
        let out = cmd.output().context("cannot run shift-weight")?;
        let wall = started.elapsed();
        ensure!(
            out.status.code() == Some(expect),
            "shift-weight {args:?} exited {:?}, expected {expect}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(wall)
    }

    fn haproxy_rounds(work: &Path) -> Result<(Figures, usize, usize)> {
        let servers = [
            VersionServer::start("blue")?,
            VersionServer::start("blue")?,
            VersionServer::start("green")?,
        ];
        let layout: Vec<Server> = ["blue1", "blue2", "green1"]
            .iter()
            .zip(&servers)
            .map(|(name, s)| Server {
                name: (*name).to_owned(),
                addr: s.addr(),
                weight: if name.starts_with("blue") { 50 } else { 0 },
            })
            .collect();
        let proxy = Haproxy::start(&layout)?;
        let load = Load::start(proxy.addr(), 1000, 8)?;
        let state = work.join("rollback-haproxy.json");
        let env = vec![("SWITCHYARD_STATE".to_owned(), state.display().to_string())];
        let router: Vec<String> = [
            "--router".to_owned(),
            "haproxy".to_owned(),
            "--haproxy-socket".to_owned(),
            proxy.socket().display().to_string(),
            "--backend".to_owned(),
            BACKEND.to_owned(),
            "--server-state-file".to_owned(),
            proxy.state_file().display().to_string(),
        ]
        .into();
        let figures = rounds("haproxy", &router, &env, &state, || {
            ensure!(
                proxy.weight("green1")? == 0,
                "green1 still has weight after the rollback"
            );
            Ok(())
        })?;
        let report = load.stop();
        Ok((figures, report.failures(), report.samples.len()))
    }

    /// Rounds of: a shift whose gate fails at step 2 (exit 4), then a shift
    /// to 50% and a separate `--rollback`; `check` runs after each round.
    fn rounds(
        name: &str,
        router: &[String],
        env: &[(String, String)],
        state: &Path,
        check: impl Fn() -> Result<()>,
    ) -> Result<Figures> {
        let mut figures = Figures {
            in_shift: Vec::new(),
            process: Vec::new(),
            process_decided: Vec::new(),
        };
        for round in 1..=ROUNDS {
            let _ = std::fs::remove_file(state);
            let gate = gate()?;
            let mut args = router.to_vec();
            args.extend(gate_args(&gate.url()));
            run_step(&args, env, 4)?;
            figures
                .in_shift
                .push(span(state, |a, o| a == "gate" && o == "failed")?);

            let mut args = router.to_vec();
            args.extend(["--to", "green", "--weight", "50", "--force", "-q"].map(str::to_owned));
            run_step(&args, env, 0)?;
            let mut args = router.to_vec();
            args.extend(["--rollback", "-q"].map(str::to_owned));
            figures.process.push(run_step(&args, env, 0)?);
            figures
                .process_decided
                .push(span(state, |a, _| a == "rollback-started")?);
            check()?;
            eprintln!(
                "{name} round {round}/{ROUNDS}: in-shift rollback {}, --rollback process {}",
                super::ms(figures.in_shift[round - 1]),
                super::ms(figures.process[round - 1])
            );
        }
        Ok(figures)
    }

    /// A Route53 weighted group of five members on moto, blue=100 and four at
    /// 0, shifted and rolled back while the machine serves 1,000 requests/s.
    fn route53_rounds(work: &Path) -> Result<Figures> {
        let moto = Moto::start_direct()?;
        let zone = aws(
            &moto,
            &[
                "route53",
                "create-hosted-zone",
                "--name",
                "five.switchyard.test",
                "--caller-reference",
                "bench-five",
            ],
        )?;
        let zone = text(&zone["HostedZone"]["Id"])?
            .trim_start_matches("/hostedzone/")
            .to_owned();
        let name = "app.five.switchyard.test";
        let members = ["blue", "green", "east", "west", "north"];
        let changes: Vec<Value> = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                serde_json::json!({
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": name, "Type": "A", "SetIdentifier": m,
                        "Weight": if *m == "blue" { 100 } else { 0 }, "TTL": 60,
                        "ResourceRecords": [{"Value": format!("52.94.7.{}", i + 1)}]
                    }
                })
            })
            .collect();
        let batch = serde_json::json!({ "Changes": changes }).to_string();
        aws(
            &moto,
            &[
                "route53",
                "change-resource-record-sets",
                "--hosted-zone-id",
                &zone,
                "--change-batch",
                &batch,
            ],
        )?;
        let target = VersionServer::start("other")?;
        let load = Load::start(target.addr(), 1000, 8)?;
        let state = work.join("rollback-route53.json");
        let mut env = moto.env();
        env.push(("SWITCHYARD_STATE".to_owned(), state.display().to_string()));
        let router: Vec<String> = ["--zone-id", &zone, "--record-name", name, "--settle", "0s"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let figures = rounds("route53 x5", &router, &env, &state, || {
            let listed = aws(
                &moto,
                &[
                    "route53",
                    "list-resource-record-sets",
                    "--hosted-zone-id",
                    &zone,
                ],
            )?;
            let weights: Vec<(String, i64)> = listed["ResourceRecordSets"]
                .as_array()
                .context("no record sets")?
                .iter()
                .filter(|s| s["Type"] == "A")
                .map(|s| {
                    (
                        s["SetIdentifier"].as_str().unwrap_or_default().to_owned(),
                        s["Weight"].as_i64().unwrap_or(-1),
                    )
                })
                .collect();
            ensure!(
                weights
                    .iter()
                    .all(|(m, w)| *w == if m == "blue" { 100 } else { 0 }),
                "after the rollback the aws CLI reads {weights:?}"
            );
            Ok(())
        })?;
        let report = load.stop();
        ensure!(
            report.failures() == 0,
            "{} of the background requests failed",
            report.failures()
        );
        Ok(figures)
    }

    fn aws(moto: &Moto, args: &[&str]) -> Result<Value> {
        switchyard_tests::aws_cli::call(&moto.env(), args)
    }

    fn text(v: &Value) -> Result<String> {
        v.as_str()
            .map(str::to_owned)
            .context("the aws CLI did not answer the expected field")
    }

    fn alb_rounds(work: &Path) -> Result<Figures> {
        let moto = Moto::start_direct()?;
        // One command line per call; no argument holds a space.
        let cli = |line: &str| aws(&moto, &line.split_whitespace().collect::<Vec<_>>());
        let vpc = text(&cli("ec2 create-vpc --cidr-block 10.0.0.0/16")?["Vpc"]["VpcId"])?;
        let mut subnets = Vec::new();
        for (cidr, az) in [("10.0.1.0/24", "us-east-1a"), ("10.0.2.0/24", "us-east-1b")] {
            subnets.push(text(
                &cli(&format!(
                    "ec2 create-subnet --vpc-id {vpc} --cidr-block {cidr} --availability-zone {az}"
                ))?["Subnet"]["SubnetId"],
            )?);
        }
        let lb = text(
            &cli(&format!(
                "elbv2 create-load-balancer --name bench --subnets {} {}",
                subnets[0], subnets[1]
            ))?["LoadBalancers"][0]["LoadBalancerArn"],
        )?;
        let mut groups = Vec::new();
        for name in ["bench-blue", "bench-green"] {
            groups.push(text(
                &cli(&format!(
                    "elbv2 create-target-group --name {name} --protocol HTTP --port 80 --vpc-id {vpc}"
                ))?["TargetGroups"][0]["TargetGroupArn"],
            )?);
        }
        let forward = format!(
            r#"[{{"Type":"forward","ForwardConfig":{{"TargetGroups":[{{"TargetGroupArn":"{}","Weight":100}},{{"TargetGroupArn":"{}","Weight":0}}]}}}}]"#,
            groups[0], groups[1]
        );
        let listener = text(
            &cli(&format!(
                "elbv2 create-listener --load-balancer-arn {lb} --protocol HTTP --port 80 --default-actions {forward}"
            ))?["Listeners"][0]["ListenerArn"],
        )?;
        let state = work.join("rollback-alb.json");
        let mut env = moto.env();
        env.push(("SWITCHYARD_STATE".to_owned(), state.display().to_string()));
        let router: Vec<String> = [
            "--router",
            "alb",
            "--listener-arn",
            &listener,
            "--member",
            &format!("blue={}", groups[0]),
            "--member",
            &format!("green={}", groups[1]),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let figures = rounds("alb", &router, &env, &state, || Ok(()))?;
        let weights = &aws(
            &moto,
            &["elbv2", "describe-listeners", "--listener-arns", &listener],
        )?["Listeners"][0]["DefaultActions"][0]["ForwardConfig"]["TargetGroups"];
        ensure!(
            weights[0]["Weight"] == 100 && weights[1]["Weight"] == 0,
            "after the rollbacks the aws CLI reads {weights}"
        );
        Ok(figures)
    }
}
