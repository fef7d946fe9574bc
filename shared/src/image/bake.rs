//! One bake, start to end: resolve the source image, reuse an image with the
//! same input hash or build one, copy it to the other regions, record the
//! result, and never leave a temporary resource behind.
//!
//! A build launches a builder (instance-initiated shutdown = stop, IMDSv2
//! required, tagged as a bake), waits until the provisioning script powers it
//! off, checks its console for the success marker, creates the image with no
//! reboot (retrying while EC2 still sees the instance stopping), waits until
//! it is available, tags it and its snapshots, copies it to every `--copy-to`
//! region at once and waits for each, marks everything `complete`, and
//! terminates the builder. On a failure, an exceeded deadline or a signal it
//! terminates the builder and deregisters every image it made that is not
//! complete, with its snapshots.
//!
//! Every wait polls with backoff (our own polling rather than the SDK's
//! waiters, whose minimum delay is 15 s), has its own deadline capped by
//! `--timeout`, observes SIGINT/SIGTERM and prints paced progress lines.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_ec2::types::{
    HttpTokensState, Image, ImageState, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceStateName, InstanceType, ResourceType,
    ShutdownBehavior, TagSpecification,
};
use aws_sdk_ec2::Client;
use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::manifest::{self, ManifestBuild};
use super::spec::{sha256_hex, BakeSpec, Source};
use super::{BakeError, STATUS_COMPLETE, STEP, TAG_BAKE_ID, TAG_INPUT_HASH, TAG_STATUS};
use crate::aws::ec2::{self, filter};
use crate::aws::ProviderError;
use crate::outcome::StepReport;
use crate::state::{Change, JournalEntry, Outcome, StateDocument, StateFile};
use crate::wait::progress::{short, Pace};
use crate::wait::{self, Backoff, WaitEnd};

/// Polling of the builder's state and console: it takes minutes to provision.
pub const BUILDER_POLL: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(15),
};

/// Polling of an image's state: minutes for a create, longer for a copy.
pub const IMAGE_POLL: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(20),
};

/// The EC2 clients of a bake: the home region's, and one per `--copy-to` region.
#[derive(Debug, Clone)]
pub struct BakeClients {
    /// Where the builder runs and the image is made.
    pub home_region: String,
    /// EC2 in the home region.
    pub home: Client,
    /// EC2 in each copy region.
    pub copies: BTreeMap<String, Client>,
}

impl BakeClients {
    /// Clients for `home_region` and every region of `copy_to`.
    pub fn new(config: &aws_config::SdkConfig, home_region: &str, copy_to: &[String]) -> Self {
        Self {
            home_region: home_region.to_owned(),
            home: crate::aws::ec2_in(config, home_region),
            copies: copy_to
                .iter()
                .map(|r| (r.clone(), crate::aws::ec2_in(config, r)))
                .collect(),
        }
    }

    fn get(&self, region: &str) -> &Client {
        self.copies.get(region).unwrap_or(&self.home)
    }

    /// Every region's client, the home region first.
    fn all(&self) -> Vec<(String, Client)> {
        std::iter::once((self.home_region.clone(), self.home.clone()))
            .chain(self.copies.iter().map(|(r, c)| (r.clone(), c.clone())))
            .collect()
    }
}

/// How a bake runs.
#[derive(Debug, Clone)]
pub struct BakeOptions {
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// Deadline of the whole step (`--timeout`); caps every wait.
    pub timeout: Duration,
    /// Longest wait for the builder to power off (`--wait-stopped`).
    pub wait_stopped: Duration,
    /// Longest wait for the success marker on the console once stopped (`--wait-console`).
    pub wait_console: Duration,
    /// Longest wait for each image to become available (`--wait-image`).
    pub wait_image: Duration,
    /// Delays between polls of the builder.
    pub builder_poll: Backoff,
    /// Delays between polls of images.
    pub image_poll: Backoff,
    /// Where to write the Packer-compatible manifest.
    pub manifest: Option<PathBuf>,
}

impl BakeOptions {
    /// Options with the default waits and polling.
    pub fn new(timeout: Duration, dry_run: bool) -> Self {
        Self {
            dry_run,
            timeout,
            wait_stopped: Duration::from_secs(45 * 60),
            wait_console: Duration::from_secs(5 * 60),
            wait_image: Duration::from_secs(60 * 60),
            builder_poll: BUILDER_POLL,
            image_poll: IMAGE_POLL,
            manifest: None,
        }
    }
}

/// How long a bake waited, for people and for `make bench`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// The whole bake.
    pub total_ms: u64,
    /// Waiting for the builder to power off (the provisioning itself).
    pub waited_for_builder_ms: u64,
    /// Waiting for images and copies to become available.
    pub waited_for_images_ms: u64,
}

/// The result of a bake.
#[derive(Debug, Clone, Serialize)]
pub struct BakeReport {
    /// The service.
    pub service: String,
    /// The version.
    pub version: String,
    /// Image id per region.
    pub amis: BTreeMap<String, String>,
    /// The input hash.
    pub input_hash: String,
    /// Whether an existing image was reused (nothing launched).
    pub reused: bool,
    /// The bake id on every resource (of the reused image's bake, when reused).
    pub bake_id: Option<String>,
    /// The source image.
    pub source_image: String,
    /// The builder that was launched (and terminated).
    pub builder: Option<String>,
    /// A dry run: `plan` says what would be done, nothing was.
    pub dry_run: bool,
    /// The changes, in order (the plan, on a dry run).
    pub plan: Vec<String>,
    /// The manifest written.
    pub manifest: Option<String>,
    /// How long it took.
    pub timings: Timings,
    /// The service's older images removed (`--keep`), or in a dry run to be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<Box<super::retention::Retention>>,
}

impl StepReport for BakeReport {
    fn text(&self) -> String {
        let mut text = String::new();
        let amis = self
            .amis
            .iter()
            .map(|(r, a)| format!("{a} ({r})"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.dry_run {
            let _ = writeln!(
                text,
                "dry run for {} {}: nothing was changed. The plan:",
                self.service, self.version
            );
            for (i, line) in self.plan.iter().enumerate() {
                let _ = writeln!(text, "  {}. {line}", i + 1);
            }
            return text;
        }
        if self.reused {
            let _ = writeln!(
                text,
                "reused {amis} for {} {}: an image with the same inputs exists",
                self.service, self.version
            );
        } else {
            let _ = writeln!(text, "baked {amis} for {} {}", self.service, self.version);
        }
        let _ = writeln!(
            text,
            "input hash {}, source {}, bake id {}",
            self.input_hash,
            self.source_image,
            self.bake_id.as_deref().unwrap_or("-")
        );
        for line in &self.plan {
            let _ = writeln!(text, "  {line}");
        }
        text
    }

    fn outputs(&self) -> Vec<(String, String)> {
        let home = self.amis.values().next().cloned().unwrap_or_default();
        vec![
            ("ami".into(), home),
            ("amis".into(), json!(self.amis).to_string()),
            ("input-hash".into(), self.input_hash.clone()),
            ("reused".into(), self.reused.to_string()),
            ("bake-id".into(), self.bake_id.clone().unwrap_or_default()),
            (
                "retired".into(),
                self.retention
                    .as_ref()
                    .map_or(0, |r| r.retired.len())
                    .to_string(),
            ),
        ]
    }

    fn summary(&self) -> String {
        let mut text = format!(
            "### bake-ami: {} {}{}\n\n| region | image |\n|---|---|\n",
            self.service,
            self.version,
            if self.reused { " (reused)" } else { "" }
        );
        for (region, ami) in &self.amis {
            let _ = writeln!(text, "| {region} | `{ami}` |");
        }
        let _ = writeln!(text, "\ninput hash `{}`", self.input_hash);
        if let Some(r) = self.retention.as_ref().filter(|r| !r.retired.is_empty()) {
            let _ = writeln!(
                text,
                "\n{} {} older image(s) beyond the newest {}",
                if self.dry_run {
                    "would remove"
                } else {
                    "removed"
                },
                r.retired.len(),
                r.keep
            );
        }
        text
    }
}

/// The source image, resolved.
#[derive(Debug, Clone)]
pub struct SourceImage {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// Bakes (or reuses) the image `spec` describes, records it in the state
/// file, and writes the manifest when asked.
pub async fn bake(
    clients: &BakeClients,
    spec: &BakeSpec,
    opts: &BakeOptions,
    state: &StateFile,
    cancel: &CancellationToken,
) -> Result<BakeReport, BakeError> {
    spec.check()?;
    let started = Instant::now();
    let mut doc = state.load().await?;
    let source = resolve_source(&clients.home, &clients.home_region, &spec.source).await?;
    let hash = spec.input_hash(&source.id);
    let mut run = Run {
        clients,
        spec,
        opts,
        cancel,
        step_deadline: started + opts.timeout,
        made: Made::default(),
        changes: Vec::new(),
        timings: Timings::default(),
        plan: Vec::new(),
        left_behind: false,
    };
    run.finish_killed_bakes(&mut doc, state).await?;
    if !spec.force {
        if let Some(found) = find_complete(&clients.home, &hash).await? {
            let report = run.reuse(&mut doc, state, &source, &hash, &found).await;
            return run.finish(report, started);
        }
    }
    if opts.dry_run {
        return run.finish(Ok(run.plan_build(&source, &hash)), started);
    }
    let report = run.build(&mut doc, state, &source, &hash).await;
    run.finish(report, started)
}

/// What a run made that is not complete yet: removed on failure.
#[derive(Debug, Default)]
struct Made {
    builder: Option<String>,
    images: Vec<(String, String)>,
}

struct Run<'a> {
    clients: &'a BakeClients,
    spec: &'a BakeSpec,
    opts: &'a BakeOptions,
    cancel: &'a CancellationToken,
    step_deadline: Instant,
    made: Made,
    changes: Vec<Change>,
    timings: Timings,
    plan: Vec<String>,
    /// Something could not be removed (a cleanup or the builder's termination failed).
    left_behind: bool,
}

/// One step of a poll.
enum Poll<T> {
    Ready(T),
    Pending(String),
}

impl Run<'_> {
    fn finish(
        &self,
        report: Result<BakeReport, BakeError>,
        started: Instant,
    ) -> Result<BakeReport, BakeError> {
        report.map(|mut r| {
            r.timings = self.timings.clone();
            r.timings.total_ms = millis(started.elapsed());
            r
        })
    }

    fn report(&self, source: &SourceImage, hash: &str) -> BakeReport {
        BakeReport {
            service: self.spec.service.clone(),
            version: self.spec.version.clone(),
            amis: BTreeMap::new(),
            input_hash: hash.to_owned(),
            reused: false,
            bake_id: None,
            source_image: source.id.clone(),
            builder: None,
            dry_run: self.opts.dry_run,
            plan: Vec::new(),
            manifest: self.opts.manifest.as_ref().map(|p| p.display().to_string()),
            timings: Timings::default(),
            retention: None,
        }
    }

    fn plan_build(&self, source: &SourceImage, hash: &str) -> BakeReport {
        let spec = self.spec;
        let home = &self.clients.home_region;
        let mut plan = vec![
            format!(
                "launch a {} builder in {home} from {} ({}), IMDSv2 required, shutdown stops it, \
                 tagged switchyard:purpose=bake and a new switchyard:bake-id, user-data sha256 {}",
                spec.instance_type,
                source.id,
                source.name,
                sha256_hex(&spec.user_data())
            ),
            format!(
                "wait until it stops (deadline {}), then for {:?} on its console (deadline {})",
                short(self.opts.wait_stopped.min(self.opts.timeout)),
                spec.marker,
                short(self.opts.wait_console.min(self.opts.timeout))
            ),
            format!(
                "create image {}-{}-<bake id> with no reboot, tagged (input hash {hash}); wait until available (deadline {}); tag its snapshots",
                spec.service,
                spec.version,
                short(self.opts.wait_image.min(self.opts.timeout))
            ),
        ];
        for region in &spec.copy_to {
            plan.push(format!(
                "copy it to {region}, tag the copy, wait until available"
            ));
        }
        plan.push("tag every image and snapshot switchyard:bake-status=complete".into());
        plan.push("terminate the builder".into());
        plan.push(self.state_line());
        let mut report = self.report(source, hash);
        report.plan = plan;
        report
    }

    fn state_line(&self) -> String {
        match &self.opts.manifest {
            Some(path) => format!(
                "record image.amis and input_hash in the state file; write the manifest {}",
                path.display()
            ),
            None => "record image.amis and input_hash in the state file".into(),
        }
    }

    /// An image with the same input hash exists at home: nothing is launched;
    /// regions that lack a complete copy get one, copied from it.
    async fn reuse(
        &mut self,
        doc: &mut StateDocument,
        state: &StateFile,
        source: &SourceImage,
        hash: &str,
        found: &Image,
    ) -> Result<BakeReport, BakeError> {
        let home = self.clients.home_region.clone();
        let home_ami = found.image_id().unwrap_or_default().to_owned();
        let tags = ec2::image_tags(found);
        let bake_id = tags.get(TAG_BAKE_ID).cloned();
        let mut report = self.report(source, hash);
        report.reused = true;
        report.bake_id.clone_from(&bake_id);
        report.amis.insert(home.clone(), home_ami.clone());
        self.plan.push(format!(
            "reuse {home_ami} in {home}: it was baked from the same inputs (input hash {hash})"
        ));
        let mut missing = Vec::new();
        for region in &self.spec.copy_to {
            if let Some(copy) = find_complete(self.clients.get(region), hash).await? {
                let id = copy.image_id().unwrap_or_default().to_owned();
                self.plan.push(format!("reuse {id} in {region}"));
                report.amis.insert(region.clone(), id);
            } else {
                self.plan.push(format!(
                    "copy {home_ami} to {region}, tag the copy, wait until available"
                ));
                missing.push(region.clone());
            }
        }
        if self.opts.dry_run {
            self.plan.push(self.state_line());
            report.plan = std::mem::take(&mut self.plan);
            return Ok(report);
        }
        if !missing.is_empty() {
            if let Some(id) = &bake_id {
                // Written ahead, as for a bake: a killed copy's half-made
                // images carry this bake id, and the next run removes them.
                doc.record(
                    JournalEntry::new(STEP, "copies-started", Outcome::Ok)
                        .detail(format!("copy {home_ami} to {}", missing.join(", ")))
                        .with("bake_id", id.as_str()),
                );
                state.save(doc).await?;
            }
            let mut copy_tags = tags.clone();
            copy_tags.insert(TAG_STATUS.into(), super::STATUS_IN_PROGRESS.into());
            let name = found.name().unwrap_or("switchyard-bake").to_owned();
            match self
                .copy_and_complete(&home_ami, &name, &missing, &copy_tags)
                .await
            {
                Ok(copies) => report.amis.extend(copies),
                Err(e) => {
                    let cleanup = self.cleanup().await;
                    self.journal_failure(doc, state, &e, bake_id.as_deref())
                        .await?;
                    return Err(e.with_cleanup(cleanup));
                }
            }
        }
        report.plan = std::mem::take(&mut self.plan);
        self.record(doc, state, &report, found.name().unwrap_or_default())
            .await?;
        Ok(report)
    }

    /// Builds the image; on any failure removes what it made.
    async fn build(
        &mut self,
        doc: &mut StateDocument,
        state: &StateFile,
        source: &SourceImage,
        hash: &str,
    ) -> Result<BakeReport, BakeError> {
        let bake_id = new_bake_id();
        let mut report = self.report(source, hash);
        report.bake_id = Some(bake_id.clone());
        // Written ahead: a run killed from here on leaves resources tagged
        // with this bake id, and the next run of this state file removes them.
        doc.record(
            JournalEntry::new(STEP, "bake-started", Outcome::Ok)
                .detail(format!(
                    "bake {bake_id} of {} {} from {}",
                    self.spec.service, self.spec.version, source.id
                ))
                .with("bake_id", bake_id.as_str())
                .with("input_hash", hash),
        );
        state.save(doc).await?;
        let result = self.build_steps(doc, state, source, hash, &bake_id).await;
        match result {
            Ok(amis) => {
                report.amis = amis;
                report.builder.clone_from(&self.made.builder);
                // The images are complete whatever happens to the builder now;
                // a builder that cannot be terminated is reported (exit 3) after
                // the result is recorded, and the sweep finds it by its tags.
                let mut left: Option<BakeError> = None;
                if let Some(builder) = self.made.builder.take() {
                    let home = &self.clients.home_region;
                    match ec2::terminate_instance(&self.clients.home, &builder).await {
                        Ok(()) => {
                            tracing::info!("terminated the builder {builder}");
                            self.changes.push(change(
                                format!("ec2:{home}/instance/{builder}"),
                                "terminated",
                            ));
                            self.plan.push(format!("terminated the builder {builder}"));
                        }
                        Err(e) => {
                            self.left_behind = true;
                            left = Some(e.into());
                        }
                    }
                }
                if let Err(e) = self.remove_twins(&bake_id).await {
                    self.left_behind = true;
                    left.get_or_insert(e);
                }
                report.plan = std::mem::take(&mut self.plan);
                self.record(doc, state, &report, &self.spec.image_name(&bake_id))
                    .await?;
                match left {
                    Some(e) => Err(e),
                    None => Ok(report),
                }
            }
            Err(e) => {
                let cleanup = self.cleanup().await;
                if let Err(twins) = self.remove_twins(&bake_id).await {
                    tracing::warn!("{twins}");
                    self.left_behind = true;
                }
                self.journal_failure(doc, state, &e, Some(&bake_id)).await?;
                Err(e.with_cleanup(cleanup))
            }
        }
    }

    /// Removes what this bake made without knowing it: a second builder or
    /// image made when a call's answer was lost and the call was sent again.
    /// AWS makes neither (RunInstances is deduplicated by its client token, a
    /// second image of the same name is refused and the first is taken), but
    /// an endpoint that does neither would leave a paid twin behind. Found by
    /// the bake id in the home region, where the builder and image are made:
    /// builders not terminated, images and snapshots still in progress.
    async fn remove_twins(&mut self, bake_id: &str) -> Result<(), BakeError> {
        for c in super::sweep::remove_bakes(&self.clients.all()[..1], &[bake_id.to_owned()]).await?
        {
            tracing::info!("removed {} (made twice by bake {bake_id})", c.resource);
            self.changes.push(c);
        }
        Ok(())
    }

    async fn build_steps(
        &mut self,
        doc: &mut StateDocument,
        state: &StateFile,
        source: &SourceImage,
        hash: &str,
        bake_id: &str,
    ) -> Result<BTreeMap<String, String>, BakeError> {
        let spec = self.spec;
        let home = self.clients.home_region.clone();
        let client = &self.clients.home;

        let builder = self.launch(source, bake_id).await?;
        doc.record(
            JournalEntry::new(STEP, "builder-launched", Outcome::Ok)
                .detail(format!(
                    "builder {builder} launched from {} for {} {}",
                    source.id, spec.service, spec.version
                ))
                .change(change(format!("ec2:{home}/instance/{builder}"), "launched"))
                .with("bake_id", bake_id)
                .with("input_hash", hash),
        );
        state.save(doc).await?;

        let waited = Instant::now();
        self.wait_stopped(&builder).await?;
        self.timings.waited_for_builder_ms = millis(waited.elapsed());
        tracing::info!(
            "builder {builder} stopped after {}",
            short(waited.elapsed())
        );
        self.wait_marker(&builder).await?;

        let tags = spec.image_tags(&source.id, hash, bake_id);
        let name = spec.image_name(bake_id);
        let image = self.create_image(&builder, &name, &tags).await?;
        let waited = Instant::now();
        wait_image(
            client,
            &home,
            &image,
            self.opts,
            self.step_deadline,
            self.cancel,
        )
        .await?;
        self.tag_snapshots(&home, &image, &tags).await?;
        let copies = self.copy_and_complete_home(&image, &name, &tags).await?;
        self.timings.waited_for_images_ms = millis(waited.elapsed());
        let mut amis = BTreeMap::from([(home, image)]);
        amis.extend(copies);
        Ok(amis)
    }

    /// Copies to every `--copy-to` region and marks everything complete, the home image included.
    async fn copy_and_complete_home(
        &mut self,
        image: &str,
        name: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, BakeError> {
        let regions = self.spec.copy_to.clone();
        let copies = self.copy(image, name, &regions, tags).await?;
        let home = self.clients.home_region.clone();
        let mut all = copies.clone();
        all.insert(home, image.to_owned());
        self.complete(&all).await?;
        Ok(copies)
    }

    /// Copies a complete home image to `regions` and marks the copies complete.
    async fn copy_and_complete(
        &mut self,
        image: &str,
        name: &str,
        regions: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, BakeError> {
        let copies = self.copy(image, name, regions, tags).await?;
        self.complete(&copies).await?;
        Ok(copies)
    }

    async fn launch(&mut self, source: &SourceImage, bake_id: &str) -> Result<String, BakeError> {
        let spec = self.spec;
        let home = self.clients.home_region.clone();
        let tags = ec2::tag_list(&spec.builder_tags(bake_id));
        let spec_for = |kind: ResourceType| {
            TagSpecification::builder()
                .resource_type(kind)
                .set_tags(Some(tags.clone()))
                .build()
        };
        let out = self
            .clients
            .home
            .run_instances()
            .image_id(&source.id)
            .instance_type(InstanceType::from(spec.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .user_data(aws_smithy_types::base64::encode(
                spec.user_data().as_bytes(),
            ))
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Stop)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .build(),
            )
            .set_subnet_id(spec.subnet_id.clone())
            .set_security_group_ids(
                (!spec.security_group_ids.is_empty()).then(|| spec.security_group_ids.clone()),
            )
            .tag_specifications(spec_for(ResourceType::Instance))
            .tag_specifications(spec_for(ResourceType::Volume))
            .send()
            .await
            .map_err(|e| ProviderError::from_sdk("ec2:RunInstances", &e))?;
        let id = out
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .ok_or_else(|| BakeError::Builder {
                instance: "(none)".into(),
                what: "was not launched: RunInstances answered without an instance".into(),
                cleanup: String::new(),
            })?
            .to_owned();
        self.made.builder = Some(id.clone());
        tracing::info!(
            "launched the builder {id} from {} in {home} (bake id {bake_id})",
            source.id
        );
        self.changes
            .push(change(format!("ec2:{home}/instance/{id}"), "launched"));
        self.plan
            .push(format!("launched the builder {id} from {}", source.id));
        Ok(id)
    }

    async fn wait_stopped(&self, builder: &str) -> Result<(), BakeError> {
        let client = &self.clients.home;
        let what = format!("builder {builder} to power off");
        poll(
            &what,
            "--wait-stopped",
            self.opts.wait_stopped,
            self.step_deadline,
            self.opts.builder_poll,
            self.cancel,
            || async move {
                let Some(instance) = ec2::describe_instance(client, builder).await? else {
                    return Err(BakeError::Builder {
                        instance: builder.to_owned(),
                        what: "disappeared while provisioning".into(),
                        cleanup: String::new(),
                    });
                };
                let state = instance
                    .state()
                    .and_then(|s| s.name())
                    .cloned()
                    .unwrap_or(InstanceStateName::Pending);
                match state {
                    InstanceStateName::Stopped => Ok(Poll::Ready(())),
                    InstanceStateName::Terminated | InstanceStateName::ShuttingDown => {
                        Err(BakeError::Builder {
                            instance: builder.to_owned(),
                            what: format!(
                                "is {} instead of stopped: was it terminated, or its shutdown \
                                 behaviour changed?",
                                state.as_str()
                            ),
                            cleanup: String::new(),
                        })
                    }
                    other => Ok(Poll::Pending(format!("it is {}", other.as_str()))),
                }
            },
        )
        .await
    }

    async fn wait_marker(&self, builder: &str) -> Result<(), BakeError> {
        let client = &self.clients.home;
        let marker = self.spec.marker.as_str();
        let last = RefCell::new(String::new());
        let last_ref = &last;
        let result = poll(
            &format!("the success marker on the console of {builder}"),
            "--wait-console",
            self.opts.wait_console,
            self.step_deadline,
            self.opts.builder_poll,
            self.cancel,
            || async move {
                let out = client
                    .get_console_output()
                    .instance_id(builder)
                    .send()
                    .await
                    .map_err(|e| ProviderError::from_sdk("ec2:GetConsoleOutput", &e))?;
                let text = decode_console(out.output().unwrap_or_default());
                if text.contains(marker) {
                    return Ok(Poll::Ready(()));
                }
                let status = if text.is_empty() {
                    "no console output yet".to_owned()
                } else {
                    format!("{} lines, no marker yet", text.lines().count())
                };
                *last_ref.borrow_mut() = text;
                Ok(Poll::Pending(status))
            },
        )
        .await;
        match result {
            Err(BakeError::Deadline { .. }) => {
                let text = last.borrow();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                Err(BakeError::NoMarker {
                    instance: builder.to_owned(),
                    marker: marker.to_owned(),
                    tail: if tail.is_empty() {
                        "(empty)".into()
                    } else {
                        tail
                    },
                    cleanup: String::new(),
                })
            }
            other => other,
        }
    }

    /// CreateImage with no reboot, tagged in progress; retried while EC2
    /// still sees the instance stopping (IncorrectInstanceState).
    async fn create_image(
        &mut self,
        builder: &str,
        name: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, BakeError> {
        let client = &self.clients.home;
        let tag_spec = TagSpecification::builder()
            .resource_type(ResourceType::Image)
            .set_tags(Some(ec2::tag_list(tags)))
            .build();
        let description = format!(
            "{} {} baked by switchyard bake-ami",
            self.spec.service, self.spec.version
        );
        let tag_spec = &tag_spec;
        let description = description.as_str();
        let image = poll(
            &format!("builder {builder} to be stopped for CreateImage"),
            "--wait-stopped",
            self.opts.wait_stopped,
            self.step_deadline,
            self.opts.builder_poll,
            self.cancel,
            || async move {
                let sent = client
                    .create_image()
                    .instance_id(builder)
                    .name(name)
                    .description(description)
                    .no_reboot(true)
                    .tag_specifications(tag_spec.clone())
                    .send()
                    .await;
                match sent {
                    Ok(out) => Ok(Poll::Ready(out.image_id().unwrap_or_default().to_owned())),
                    Err(e)
                        if e.as_service_error().and_then(
                            aws_smithy_types::error::metadata::ProvideErrorMetadata::code,
                        ) == Some("IncorrectInstanceState") =>
                    {
                        Ok(Poll::Pending("EC2 still sees it stopping".into()))
                    }
                    // The name carries the bake id: an image of that name is
                    // the one an earlier attempt made, its answer lost.
                    Err(e)
                        if e.as_service_error().and_then(
                            aws_smithy_types::error::metadata::ProvideErrorMetadata::code,
                        ) == Some("InvalidAMIName.Duplicate") =>
                    {
                        match ec2::describe_images(
                            client,
                            &["self".to_owned()],
                            vec![filter("name", &[name])],
                        )
                        .await?
                        .first()
                        .and_then(Image::image_id)
                        {
                            Some(id) => Ok(Poll::Ready(id.to_owned())),
                            None => Err(ProviderError::from_sdk("ec2:CreateImage", &e).into()),
                        }
                    }
                    Err(e) => Err(ProviderError::from_sdk("ec2:CreateImage", &e).into()),
                }
            },
        )
        .await?;
        let home = self.clients.home_region.clone();
        self.made.images.push((home.clone(), image.clone()));
        tracing::info!("creating image {image} ({name}) in {home}");
        self.changes
            .push(change(format!("ec2:{home}/image/{image}"), "created"));
        self.plan
            .push(format!("created image {image} ({name}) in {home}"));
        Ok(image)
    }

    async fn tag_snapshots(
        &mut self,
        region: &str,
        image: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, BakeError> {
        let client = self.clients.get(region);
        let snapshots = match ec2::describe_image(client, image).await? {
            Some(i) => ec2::snapshot_ids(&i),
            None => Vec::new(),
        };
        ec2::create_tags_on(client, &snapshots, tags).await?;
        Ok(snapshots)
    }

    /// Starts every copy (CopyImage runs in the destination region), tags
    /// each, then waits for all of them at once.
    async fn copy(
        &mut self,
        image: &str,
        name: &str,
        regions: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, BakeError> {
        let home = self.clients.home_region.clone();
        let mut copies = BTreeMap::new();
        for region in regions {
            let client = self.clients.get(region);
            let out = client
                .copy_image()
                .source_region(&home)
                .source_image_id(image)
                .name(name)
                .description(format!(
                    "{} {} baked by switchyard bake-ami, copied from {home}:{image}",
                    self.spec.service, self.spec.version
                ))
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Image)
                        .set_tags(Some(ec2::tag_list(tags)))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| ProviderError::from_sdk("ec2:CopyImage", &e))?;
            let id = out.image_id().unwrap_or_default().to_owned();
            self.made.images.push((region.clone(), id.clone()));
            // Not every EC2 implementation applies CopyImage's tag specifications.
            ec2::create_tags_on(client, std::slice::from_ref(&id), tags).await?;
            tracing::info!("copying {image} to {region} as {id}");
            self.changes.push(change(
                format!("ec2:{region}/image/{id}"),
                &format!("copied from {home}:{image}"),
            ));
            self.plan
                .push(format!("copied {image} to {region} as {id}"));
            copies.insert(region.clone(), id);
        }
        let waits = copies.iter().map(|(region, id)| {
            wait_image(
                self.clients.get(region),
                region,
                id,
                self.opts,
                self.step_deadline,
                self.cancel,
            )
        });
        for result in futures::future::join_all(waits).await {
            result?;
        }
        for (region, id) in &copies {
            self.tag_snapshots(region, id, tags).await?;
        }
        Ok(copies)
    }

    /// Tags every image of `amis` and its snapshots `complete`: from now on
    /// they are reused and never swept.
    async fn complete(&mut self, amis: &BTreeMap<String, String>) -> Result<(), BakeError> {
        let done = BTreeMap::from([(TAG_STATUS.to_owned(), STATUS_COMPLETE.to_owned())]);
        for (region, id) in amis {
            let client = self.clients.get(region);
            let mut resources = vec![id.clone()];
            if let Some(image) = ec2::describe_image(client, id).await? {
                resources.extend(ec2::snapshot_ids(&image));
            }
            ec2::create_tags_on(client, &resources, &done).await?;
        }
        self.made
            .images
            .retain(|(region, id)| amis.get(region) != Some(id));
        self.plan
            .push("tagged every image and snapshot switchyard:bake-status=complete".into());
        Ok(())
    }

    /// Terminates the builder and removes every image that is not complete.
    /// Returns a sentence saying what it did, for the error message.
    async fn cleanup(&mut self) -> String {
        let mut done = Vec::new();
        let mut failed = Vec::new();
        if let Some(builder) = self.made.builder.take() {
            let home = self.clients.home_region.clone();
            match ec2::terminate_instance(&self.clients.home, &builder).await {
                Ok(()) => {
                    done.push(format!("terminated the builder {builder}"));
                    self.changes.push(change(
                        format!("ec2:{home}/instance/{builder}"),
                        "terminated",
                    ));
                }
                Err(e) => failed.push(format!("builder {builder}: {e}")),
            }
        }
        for (region, image) in std::mem::take(&mut self.made.images).into_iter().rev() {
            match ec2::delete_image(self.clients.get(&region), &image).await {
                Ok(snapshots) => {
                    let with = if snapshots.is_empty() {
                        String::new()
                    } else {
                        format!(" and its snapshots {}", snapshots.join(", "))
                    };
                    done.push(format!(
                        "deregistered the half-made image {image} ({region}){with}"
                    ));
                    self.changes.push(change(
                        format!("ec2:{region}/image/{image}"),
                        "deregistered with its snapshots",
                    ));
                }
                Err(e) => failed.push(format!("image {image} ({region}): {e}")),
            }
        }
        for line in &done {
            tracing::info!("cleanup: {line}");
        }
        self.left_behind |= !failed.is_empty();
        match (done.is_empty(), failed.is_empty()) {
            (true, true) => "nothing was left behind".into(),
            (false, true) => format!("cleaned up: {}", done.join("; ")),
            (_, false) => format!(
                "cleanup failed for {} (run `bake-ami sweep --older-than 0s` to remove what is left){}",
                failed.join("; "),
                if done.is_empty() {
                    String::new()
                } else {
                    format!("; {}", done.join("; "))
                }
            ),
        }
    }

    /// Removes what earlier runs of this state file left behind when they
    /// were killed (SIGKILL, a CI time-out): their bake ids were written
    /// ahead into the journal and never closed. In a dry run, only says so.
    async fn finish_killed_bakes(
        &mut self,
        doc: &mut StateDocument,
        state: &StateFile,
    ) -> Result<(), BakeError> {
        let open = unfinished_bakes(doc);
        if open.is_empty() {
            return Ok(());
        }
        let list = open.join(", ");
        if self.opts.dry_run {
            self.plan.push(format!(
                "remove what the unfinished bake(s) {list} of this state file left behind"
            ));
            return Ok(());
        }
        let changes = super::sweep::remove_bakes(&self.clients.all(), &open).await?;
        tracing::info!(
            "removed {} leftover(s) of the unfinished bake(s) {list}",
            changes.len()
        );
        self.plan.push(format!(
            "removed {} leftover(s) of the unfinished bake(s) {list}",
            changes.len()
        ));
        let mut entry = JournalEntry::new(STEP, "leftovers-removed", Outcome::Ok)
            .detail(format!(
                "removed {} leftover(s) of the unfinished bake(s) {list}",
                changes.len()
            ))
            .with("bake_ids", json!(open));
        for c in changes {
            entry = entry.change(c);
        }
        doc.record(entry);
        state.save(doc).await?;
        Ok(())
    }

    async fn journal_failure(
        &mut self,
        doc: &mut StateDocument,
        state: &StateFile,
        error: &BakeError,
        bake_id: Option<&str>,
    ) -> Result<(), BakeError> {
        let outcome = if matches!(error, BakeError::Interrupted { .. }) {
            Outcome::Interrupted
        } else {
            Outcome::Failed
        };
        let mut entry = JournalEntry::new(STEP, "bake-failed", outcome).detail(
            error
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
        if let Some(id) = bake_id {
            entry = entry.with("bake_id", id).with("clean", !self.left_behind);
        }
        for c in std::mem::take(&mut self.changes) {
            entry = entry.change(c);
        }
        doc.record(entry);
        state.save(doc).await?;
        Ok(())
    }

    async fn record(
        &mut self,
        doc: &mut StateDocument,
        state: &StateFile,
        report: &BakeReport,
        name: &str,
    ) -> Result<(), BakeError> {
        let mut image = doc.image.take().unwrap_or_default();
        image.amis.clone_from(&report.amis);
        image.input_hash = Some(report.input_hash.clone());
        image.bake_id.clone_from(&report.bake_id);
        image.source_image = Some(report.source_image.clone());
        image.name = Some(name.to_owned());
        image.user_data_sha256 = Some(sha256_hex(&self.spec.user_data()));
        image.baked_at = Some(Utc::now());
        image.reused = report.reused;
        doc.image = Some(image);
        let action = if report.reused {
            "image-reused"
        } else {
            "image-baked"
        };
        let mut entry = JournalEntry::new(STEP, action, Outcome::Ok)
            .detail(format!(
                "{} {} {}: {}",
                report.service,
                report.version,
                if report.reused { "reused" } else { "baked" },
                report
                    .amis
                    .iter()
                    .map(|(r, a)| format!("{r}:{a}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .with("input_hash", report.input_hash.as_str())
            .with("amis", json!(report.amis));
        if let Some(id) = &report.bake_id {
            entry = entry
                .with("bake_id", id.as_str())
                .with("clean", !self.left_behind);
        }
        for c in std::mem::take(&mut self.changes) {
            entry = entry.change(c);
        }
        doc.record(entry);
        state.save(doc).await?;
        if let Some(path) = &self.opts.manifest {
            let custom_data = BTreeMap::from([
                ("service".to_owned(), report.service.clone()),
                ("version".to_owned(), report.version.clone()),
                ("input_hash".to_owned(), report.input_hash.clone()),
                ("source_image".to_owned(), report.source_image.clone()),
                (
                    "bake_id".to_owned(),
                    report.bake_id.clone().unwrap_or_default(),
                ),
                ("reused".to_owned(), report.reused.to_string()),
            ]);
            let build = ManifestBuild {
                amis: report.amis.clone(),
                build_time: Utc::now().timestamp(),
                run_uuid: manifest::run_uuid(),
                custom_data,
            };
            manifest::write(path, &build, &self.clients.home_region)?;
        }
        Ok(())
    }
}

/// The bakes this state file's journal opened and never closed: a bake
/// (or a copy of a reused image) was written ahead, then neither finished nor
/// failed with everything cleaned up, nor were its leftovers removed since.
pub fn unfinished_bakes(doc: &StateDocument) -> Vec<String> {
    let mut open: BTreeMap<String, bool> = BTreeMap::new();
    for entry in doc.journal.iter().filter(|e| e.step == STEP) {
        match entry.action.as_str() {
            "leftovers-removed" => {
                let ids = entry.extra.get("bake_ids").and_then(|v| v.as_array());
                for id in ids.into_iter().flatten().filter_map(|v| v.as_str()) {
                    open.insert(id.to_owned(), false);
                }
            }
            "sweep" => {
                for id in entry.changes.iter().filter_map(|c| c.reference.as_deref()) {
                    open.insert(id.to_owned(), false);
                }
            }
            action => {
                let Some(id) = entry.extra.get("bake_id").and_then(|v| v.as_str()) else {
                    continue;
                };
                let unfinished = match action {
                    "bake-started" | "builder-launched" | "copies-started" => true,
                    _ => {
                        entry
                            .extra
                            .get("clean")
                            .and_then(serde_json::Value::as_bool)
                            == Some(false)
                    }
                };
                open.insert(id.to_owned(), unfinished);
            }
        }
    }
    open.into_iter()
        .filter_map(|(id, unfinished)| unfinished.then_some(id))
        .collect()
}

/// Polls `check` with backoff until it is ready, the deadline passes (its
/// own, or `--timeout`'s when that comes first) or the step is cancelled.
async fn poll<T, F, Fut>(
    what: &str,
    flag: &'static str,
    limit: Duration,
    step_deadline: Instant,
    backoff: Backoff,
    cancel: &CancellationToken,
    mut check: F,
) -> Result<T, BakeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>, BakeError>>,
{
    let own = Instant::now() + limit;
    let (deadline, flag) = if own <= step_deadline {
        (own, flag)
    } else {
        (step_deadline, "--timeout")
    };
    let mut pace = Pace::new(what, deadline);
    let mut attempt = 0;
    loop {
        if cancel.is_cancelled() {
            return Err(interrupted(what));
        }
        match check().await? {
            Poll::Ready(value) => return Ok(value),
            Poll::Pending(status) => pace.tick(&status),
        }
        match wait::sleep(backoff.delay(attempt), deadline, cancel).await {
            Ok(()) => attempt += 1,
            Err(WaitEnd::Deadline) => {
                return Err(BakeError::Deadline {
                    what: what.to_owned(),
                    after: short(pace.elapsed()),
                    flag,
                    cleanup: String::new(),
                })
            }
            Err(WaitEnd::Cancelled) => return Err(interrupted(what)),
        }
    }
}

fn interrupted(what: &str) -> BakeError {
    BakeError::Interrupted {
        doing: format!("waiting for {what}"),
        cleanup: String::new(),
    }
}

/// Waits until image `id` in `region` is available; `failed` (or a
/// deregistered image) ends the wait with the reason EC2 gives.
async fn wait_image(
    client: &Client,
    region: &str,
    id: &str,
    opts: &BakeOptions,
    step_deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(), BakeError> {
    poll(
        &format!("image {id} in {region} to become available"),
        "--wait-image",
        opts.wait_image,
        step_deadline,
        opts.image_poll,
        cancel,
        || async move {
            let Some(image) = ec2::describe_image(client, id).await? else {
                return Err(BakeError::ImageFailed {
                    image: id.to_owned(),
                    region: region.to_owned(),
                    state: "deregistered".into(),
                    reason: "it no longer exists".into(),
                    cleanup: String::new(),
                });
            };
            let state = image.state().cloned().unwrap_or(ImageState::Pending);
            match state {
                ImageState::Available => Ok(Poll::Ready(())),
                ImageState::Pending => Ok(Poll::Pending("pending".into())),
                other => Err(BakeError::ImageFailed {
                    image: id.to_owned(),
                    region: region.to_owned(),
                    state: other.as_str().to_owned(),
                    reason: image
                        .state_reason()
                        .and_then(|r| r.message())
                        .unwrap_or("EC2 gave no reason")
                        .to_owned(),
                    cleanup: String::new(),
                }),
            }
        },
    )
    .await
}

/// Finds the source image: by id, or the newest available image by name and
/// owner. Ties on the newest CreationDate are an error, never a guess.
pub async fn resolve_source(
    client: &Client,
    region: &str,
    source: &Source,
) -> Result<SourceImage, BakeError> {
    let image = match source {
        Source::Ami(id) => {
            let Some(image) = ec2::describe_image(client, id).await? else {
                return Err(BakeError::Source(format!(
                    "--source-ami {id}: no such image in {region}; images are regional, \
                     check the id and --region"
                )));
            };
            image
        }
        Source::Filter { name, owners } => {
            let mut images = ec2::describe_images(
                client,
                owners,
                vec![filter("name", &[name]), filter("state", &["available"])],
            )
            .await?;
            images.sort_by(|a, b| b.creation_date().cmp(&a.creation_date()));
            let Some(newest) = images.first().cloned() else {
                return Err(BakeError::Source(format!(
                    "--source-name {name:?}: no available image of that name owned by {} in {region}",
                    owners.join(",")
                )));
            };
            let ties: Vec<&str> = images
                .iter()
                .filter(|i| i.creation_date() == newest.creation_date())
                .filter_map(Image::image_id)
                .collect();
            if ties.len() > 1 {
                return Err(BakeError::Source(format!(
                    "--source-name {name:?} matches {} images created at the same newest time {} ({}); \
                     narrow the pattern or give --source-ami",
                    ties.len(),
                    newest.creation_date().unwrap_or("?"),
                    ties.join(", ")
                )));
            }
            newest
        }
    };
    let id = image.image_id().unwrap_or_default().to_owned();
    if image.state() != Some(&ImageState::Available) {
        return Err(BakeError::Source(format!(
            "source image {id} is {}, not available",
            image.state().map_or("in no state", ImageState::as_str)
        )));
    }
    tracing::info!("source image {id} ({})", image.name().unwrap_or("no name"));
    Ok(SourceImage {
        name: image.name().unwrap_or_default().to_owned(),
        id,
    })
}

/// The newest complete image of this account with input hash `hash`.
async fn find_complete(client: &Client, hash: &str) -> Result<Option<Image>, BakeError> {
    let mut images = ec2::describe_images(
        client,
        &["self".to_owned()],
        vec![
            filter(format!("tag:{TAG_INPUT_HASH}"), &[hash]),
            filter(format!("tag:{TAG_STATUS}"), &[STATUS_COMPLETE]),
            filter("state", &["available"]),
        ],
    )
    .await?;
    images.sort_by(|a, b| b.creation_date().cmp(&a.creation_date()));
    Ok(images.into_iter().next())
}

/// Console output as text: EC2 sends it base64-encoded.
fn decode_console(raw: &str) -> String {
    match aws_smithy_types::base64::decode(raw.trim()) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => raw.to_owned(),
    }
}

/// A new bake id: `bake-YYYYMMDDhhmmss-xxxxxx`.
pub fn new_bake_id() -> String {
    format!(
        "bake-{}-{:06x}",
        Utc::now().format("%Y%m%d%H%M%S"),
        fastrand::u32(..0x0100_0000)
    )
}

fn change(resource: String, after: &str) -> Change {
    Change {
        resource,
        before: None,
        after: Some(after.into()),
        reference: None,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "bake_tests.rs"]
mod tests;
