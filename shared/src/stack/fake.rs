//! An in-memory [`StackDriver`] for tests of the engines above the seam
//! (the blue-green flow of [`super::standby`]), as hyperfine tests its
//! benchmark logic over a `MockExecutor`: no process, no AWS, no time spent
//! unless asked for.
//!
//! It records every call in order, keeps which stacks it brought up (so a
//! second identical `up` changes nothing, as the trait asks), and can be
//! told to fail in a region, to take its time, and what endpoints and
//! capacity to report. Clones share one record, so one fake can serve every
//! region and the test reads a single, ordered history.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{StackDriver, StackError, StackSpec, StackStatus, Wait};

/// What the fake was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// [`StackDriver::capacity`].
    Capacity,
    /// [`StackDriver::plan`].
    Plan,
    /// [`StackDriver::plan_down`].
    PlanDown,
    /// [`StackDriver::up`].
    Up,
    /// [`StackDriver::down`].
    Down,
}

/// One call, with the spec it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// What was asked.
    pub op: Op,
    /// Of which stack.
    pub spec: StackSpec,
}

/// What the fake is told and what it saw, shared by its clones.
#[derive(Debug, Default)]
struct Record {
    /// Regions where `up` and `down` fail.
    failing: BTreeSet<String>,
    /// How long `up` and `down` take.
    delay: Duration,
    /// The endpoints `up` reports, by region.
    endpoints: BTreeMap<String, Vec<String>>,
    /// The capacity reported for a color's stack (in every region).
    capacity: BTreeMap<String, u32>,
    /// Every call, in order.
    calls: Vec<Call>,
    /// The stacks up, by (region, color): the version each runs.
    running: BTreeMap<(String, String), String>,
    /// `up` and `down` calls under way now, and at most.
    in_flight: usize,
    most_in_flight: usize,
}

/// The fake driver (kind `fake`); its stack of `go-auth` `blue` is named
/// `go-auth-blue`.
#[derive(Debug, Clone, Default)]
pub struct FakeDriver {
    record: Arc<Mutex<Record>>,
}

impl FakeDriver {
    /// A fake that succeeds at once everywhere, with no stack up.
    pub fn new() -> Self {
        Self::default()
    }

    /// `up` and `down` fail in `region` (a command error: exit 3), after
    /// their delay.
    #[must_use]
    pub fn failing(self, region: &str) -> Self {
        self.lock().failing.insert(region.to_owned());
        self
    }

    /// `up` and `down` take `delay`, observing the deadline and the cancel
    /// token as a real driver does.
    #[must_use]
    pub fn slow(self, delay: Duration) -> Self {
        self.lock().delay = delay;
        self
    }

    /// `up` in `region` reports these endpoints.
    #[must_use]
    pub fn endpoints(self, region: &str, endpoints: &[&str]) -> Self {
        self.lock().endpoints.insert(
            region.to_owned(),
            endpoints.iter().map(|e| (*e).to_owned()).collect(),
        );
        self
    }

    /// `color`'s stack runs at `capacity` in every region (by default no
    /// stack exists: capacity `None`).
    #[must_use]
    pub fn capacity(self, color: &str, capacity: u32) -> Self {
        self.lock().capacity.insert(color.to_owned(), capacity);
        self
    }

    /// `color`'s stack is up in `region` at `version` already.
    #[must_use]
    pub fn running(self, region: &str, color: &str, version: &str) -> Self {
        self.lock()
            .running
            .insert((region.to_owned(), color.to_owned()), version.to_owned());
        self
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls so far as `(op, region, color)`, in order.
    pub fn ops(&self) -> Vec<(Op, String, String)> {
        self.lock()
            .calls
            .iter()
            .map(|c| (c.op, c.spec.region.clone(), c.spec.color.clone()))
            .collect()
    }

    /// The most `up` and `down` calls under way at once.
    pub fn most_at_once(&self) -> usize {
        self.lock().most_in_flight
    }

    /// The version `color` runs in `region`, if it is up.
    pub fn version_in(&self, region: &str, color: &str) -> Option<String> {
        self.lock()
            .running
            .get(&(region.to_owned(), color.to_owned()))
            .cloned()
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        // A test that panicked while holding the lock has failed already.
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note(&self, op: Op, spec: &StackSpec) {
        self.lock().calls.push(Call {
            op,
            spec: spec.clone(),
        });
    }

    /// Waits out the delay, counted as one call under way; then fails if
    /// the region is set to.
    async fn work(&self, op: &str, spec: &StackSpec, wait: &Wait) -> Result<(), StackError> {
        let delay = {
            let mut r = self.lock();
            r.in_flight += 1;
            r.most_in_flight = r.most_in_flight.max(r.in_flight);
            r.delay
        };
        let waited = tokio::select! {
            biased;
            () = tokio::time::sleep(delay) => Ok(()),
            () = wait.cancel.cancelled() => Err(StackError::Interrupted(format!(
                "interrupted while taking {} {op}", self.name_of(spec)
            ))),
            () = tokio::time::sleep_until(wait.deadline) => Err(StackError::Timeout(format!(
                "the deadline passed while taking {} {op}", self.name_of(spec)
            ))),
        };
        let mut r = self.lock();
        r.in_flight -= 1;
        waited?;
        if r.failing.contains(&spec.region) {
            return Err(StackError::Command {
                command: format!("fake {op} of {}", self.name_of(spec)),
                status: "exit status 1".to_owned(),
                stderr_tail: format!("{} is set to fail", spec.region),
            });
        }
        Ok(())
    }

    fn key(spec: &StackSpec) -> (String, String) {
        (spec.region.clone(), spec.color.clone())
    }
}

impl StackDriver for FakeDriver {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn name_of(&self, spec: &StackSpec) -> String {
        format!("{}-{}", spec.service, spec.color)
    }

    async fn capacity(&self, spec: &StackSpec) -> Result<Option<u32>, StackError> {
        self.note(Op::Capacity, spec);
        Ok(self.lock().capacity.get(&spec.color).copied())
    }

    fn capacity_from(&self, _: &str) -> Self {
        self.clone()
    }

    async fn plan(&self, spec: &StackSpec) -> Result<Vec<String>, StackError> {
        self.note(Op::Plan, spec);
        let running = self.lock().running.get(&Self::key(spec)).cloned();
        Ok(if running.as_ref() == Some(&spec.version) {
            Vec::new()
        } else {
            vec![format!(
                "bring {} up at {}",
                self.name_of(spec),
                spec.version
            )]
        })
    }

    async fn plan_down(&self, spec: &StackSpec) -> Result<Vec<String>, StackError> {
        self.note(Op::PlanDown, spec);
        let running = self.lock().running.contains_key(&Self::key(spec));
        Ok(if running {
            vec![format!("take {} down", self.name_of(spec))]
        } else {
            Vec::new()
        })
    }

    async fn up(&self, spec: &StackSpec, wait: &Wait) -> Result<StackStatus, StackError> {
        self.note(Op::Up, spec);
        self.work("up", spec, wait).await?;
        let name = self.name_of(spec);
        let mut r = self.lock();
        let before = r.running.insert(Self::key(spec), spec.version.clone());
        let changes = if before.as_ref() == Some(&spec.version) {
            Vec::new()
        } else {
            vec![format!("brought {name} up at {}", spec.version)]
        };
        Ok(StackStatus {
            endpoints: r.endpoints.get(&spec.region).cloned().unwrap_or_default(),
            ids: vec![name.clone()],
            changed: !changes.is_empty(),
            changes,
            detail: BTreeMap::from([("group".to_owned(), name)]),
        })
    }

    async fn down(&self, spec: &StackSpec, wait: &Wait) -> Result<StackStatus, StackError> {
        self.note(Op::Down, spec);
        self.work("down", spec, wait).await?;
        let name = self.name_of(spec);
        let was_up = self.lock().running.remove(&Self::key(spec)).is_some();
        let changes = if was_up {
            vec![format!("took {name} down")]
        } else {
            Vec::new()
        };
        Ok(StackStatus {
            endpoints: Vec::new(),
            ids: vec![name],
            changed: was_up,
            changes,
            detail: BTreeMap::new(),
        })
    }
}
