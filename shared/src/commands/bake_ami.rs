//! `bake-ami`: a machine image baked from a base image and a provisioning
//! script, reused when nothing changed, copied to other regions
//! ([`crate::image::bake`]); and the sweep of what killed bakes left behind
//! ([`crate::image::sweep`]).

use std::time::Duration;

use crate::aws::{self, iam};
use crate::cli::bake_ami::{BakeAmiArgs, BakeArgs, Command as Sub};
use crate::cli::CommonArgs;
use crate::image::bake::{self, BakeClients, BakeOptions, BakeReport};
use crate::image::retention::{self, Keep, RegionClients};
use crate::image::spec::{BakeSpec, Script, Source};
use crate::image::sweep::{self, SweepReport};
use crate::outcome::Failure;
use crate::state::{steps, StateDocument};
use crate::step::{Command, Step};

/// The `bake-ami` command.
#[derive(Debug)]
pub struct BakeAmi;

/// The checked flags of each mode.
#[derive(Debug)]
pub enum Settings {
    /// Bake. The service and version default to the state's, so the spec is
    /// completed when the run has read the state, before any call.
    Bake {
        args: Box<BakeArgs>,
        common: Box<CommonArgs>,
    },
    /// Remove what killed bakes left.
    Sweep {
        /// The regions (empty: the configured one).
        regions: Vec<String>,
        /// Only what is older than this.
        older_than: Duration,
    },
}

crate::step_reports! {
    /// What each mode reports.
    pub enum Report {
        /// The image baked or reused.
        Baked(BakeReport),
        /// What the sweep removed.
        Swept(SweepReport),
    }
}

impl Command for BakeAmi {
    const STEP: &'static str = steps::BAKE_AMI;
    type Args = BakeAmiArgs;
    type Settings = Settings;
    type Report = Report;

    fn settings(args: BakeAmiArgs) -> Result<Settings, Failure> {
        match args.command {
            Some(Sub::Sweep(a)) => {
                for region in &a.regions {
                    aws::check_region("--regions", region)?;
                }
                Ok(Settings::Sweep {
                    regions: a.regions,
                    older_than: a.older_than,
                })
            }
            None => Ok(Settings::Bake {
                args: Box::new(args.bake),
                common: Box::new(args.common),
            }),
        }
    }

    fn policy(settings: &Settings) -> iam::Policy {
        match settings {
            Settings::Sweep { .. } => crate::image::sweep_policy(),
            Settings::Bake { args, .. } => crate::image::policy(&crate::image::BakeScope {
                service: args.service.as_deref(),
                subnet: args.subnet_id.as_deref(),
                security_groups: &args.security_group_ids,
                retention: args.keep != Keep::All,
            }),
        }
    }

    async fn run(settings: Settings, step: &mut Step) -> Result<Report, Failure> {
        let doc = step.state.load().await?;
        match settings {
            Settings::Bake { args, common } => {
                let (spec, opts) = bake_settings(&args, &common, &doc)?;
                let config = aws::load(&step.aws).await;
                let home = aws::region_of(&config);
                if spec.copy_to.contains(&home) {
                    return Err(Failure::usage(format!(
                        "--copy-to names {home}, the region the image is baked in; list only the other regions"
                    )));
                }
                let clients = BakeClients::new(&config, &home, &spec.copy_to);
                let mut env = doc.hook_env();
                env.set("SWITCHYARD_ACTION", "bake");
                env.set("SWITCHYARD_SERVICE", &spec.service);
                env.set("SWITCHYARD_VERSION", &spec.version);
                step.hooks.before_change(&env).await?;
                let mut report =
                    bake::bake(&clients, &spec, &opts, &step.state, &step.cancel).await?;
                if args.keep != Keep::All {
                    let regions: Vec<String> = std::iter::once(home.clone())
                        .chain(spec.copy_to.iter().cloned())
                        .collect();
                    let retention = retention::retire(
                        &RegionClients::new(&config, &regions),
                        &spec.service,
                        args.keep,
                        &report.amis,
                        (opts.dry_run, opts.dry_run && !report.reused),
                        &step.state,
                    )
                    .await?;
                    let mut lines = retention.lines(opts.dry_run);
                    if lines.is_empty() && opts.dry_run {
                        lines.push(format!(
                            "remove no image of {}: none beyond the newest {} in {}",
                            spec.service,
                            args.keep,
                            regions.join(", ")
                        ));
                    }
                    report.plan.extend(lines);
                    report.retention = Some(Box::new(retention));
                }
                step.hooks.set(
                    "SWITCHYARD_AMI",
                    report.amis.get(&home).map_or("", String::as_str),
                );
                Ok(report.into())
            }
            Settings::Sweep {
                regions,
                older_than,
            } => {
                let config = aws::load(&step.aws).await;
                let clients = aws::ec2_per_region(&config, &regions);
                let mut env = doc.hook_env();
                env.set("SWITCHYARD_ACTION", "sweep");
                step.hooks.before_change(&env).await?;
                let report = sweep::sweep(&clients, older_than, step.dry_run, &step.state).await?;
                Ok(report.into())
            }
        }
    }
}

/// Checks every flag of a bake before the first network call; the service
/// and version default to the state's deployment.
fn bake_settings(
    a: &BakeArgs,
    common: &CommonArgs,
    doc: &StateDocument,
) -> Result<(BakeSpec, BakeOptions), Failure> {
    let deployment = doc.deployment.as_ref();
    let service = a
        .service
        .clone()
        .or_else(|| deployment.and_then(|d| d.service.clone()))
        .ok_or_else(|| {
            Failure::usage(
                "name the service: --service NAME (or deployment.service in the state file)",
            )
        })?;
    let version = a
        .app_version
        .clone()
        .or_else(|| deployment.and_then(|d| d.version.clone()))
        .ok_or_else(|| {
            Failure::usage(
                "name the version: --app-version VERSION (or deployment.version in the state file)",
            )
        })?;
    let source = match (&a.source_ami, &a.source_name) {
        (Some(id), None) => {
            if !a.owners.is_empty() {
                return Err(Failure::usage(
                    "--owner goes with --source-name; --source-ami names one image already",
                ));
            }
            Source::Ami(id.clone())
        }
        (None, Some(name)) => Source::Filter {
            name: name.clone(),
            owners: a.owners.clone(),
        },
        _ => {
            return Err(Failure::usage(
                "name the base image: --source-ami AMI, or --source-name PATTERN --owner OWNER",
            ))
        }
    };
    let script = match &a.user_data {
        Some(path) => Script::File {
            path: path.display().to_string(),
            body: std::fs::read_to_string(path).map_err(|e| {
                Failure::usage(format!(
                    "--user-data {}: cannot read it: {e}",
                    path.display()
                ))
            })?,
        },
        None => Script::BuiltIn,
    };
    if let Some(region) = &common.region {
        if a.copy_to.contains(region) {
            return Err(Failure::usage(format!(
                "--copy-to names {region}, the region the image is baked in; list only the other regions"
            )));
        }
    }
    for (flag, d) in [
        ("--wait-stopped", a.wait_stopped),
        ("--wait-console", a.wait_console),
        ("--wait-image", a.wait_image),
    ] {
        if d.is_zero() {
            return Err(Failure::usage(format!("{flag} must be more than 0s")));
        }
    }
    let spec = BakeSpec {
        service,
        version,
        source,
        script,
        pulls: a.pulls.clone(),
        marker: a.success_marker.clone(),
        instance_type: a.instance_type.clone(),
        subnet_id: a.subnet_id.clone(),
        security_group_ids: a.security_group_ids.clone(),
        copy_to: a.copy_to.clone(),
        force: a.force,
    };
    spec.check()?;
    let mut opts = BakeOptions::new(common.timeout, common.dry_run);
    opts.wait_stopped = a.wait_stopped;
    opts.wait_console = a.wait_console;
    opts.wait_image = a.wait_image;
    opts.manifest.clone_from(&a.manifest);
    Ok((spec, opts))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn error(line: &[&str]) -> String {
        let mut full = vec!["bake-ami"];
        full.extend_from_slice(line);
        let args = BakeAmiArgs::try_parse_from(full).unwrap();
        let f = bake_settings(&args.bake, &args.common, &StateDocument::default()).unwrap_err();
        format!("{}: {}", f.code.number(), f.error)
    }

    #[test]
    fn bad_input_is_refused_with_exit_2_naming_the_problem() {
        assert!(error(&["--app-version", "1"]).starts_with("2: name the service"));
        assert!(
            error(&["--service", "a", "--app-version", "1"]).starts_with("2: name the base image")
        );
        assert!(error(&[
            "--service",
            "a",
            "--app-version",
            "1",
            "--source-name",
            "base-*"
        ])
        .contains("needs --owner"));
        assert!(error(&[
            "--service",
            "a",
            "--app-version",
            "1",
            "--source-ami",
            "ami-0123456789abcdef0",
            "--region",
            "us-east-1",
            "--copy-to",
            "us-east-1"
        ])
        .contains("the region the image is baked in"));
        assert!(error(&[
            "--service",
            "a",
            "--app-version",
            "1",
            "--source-ami",
            "ami-0123456789abcdef0",
            "--user-data",
            "/nonexistent/script.sh"
        ])
        .starts_with("2: --user-data /nonexistent/script.sh: cannot read it"));
    }

    #[test]
    fn service_and_version_come_from_the_state_when_not_given() {
        let args = BakeAmiArgs::try_parse_from([
            "bake-ami",
            "--source-ami",
            "ami-0123456789abcdef0",
            "--pull",
            "redis:7,nginx:1",
        ])
        .unwrap();
        let doc = StateDocument {
            deployment: Some(crate::state::Deployment {
                service: Some("go-auth".into()),
                version: Some("1.4.2".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (spec, _) = bake_settings(&args.bake, &args.common, &doc).unwrap();
        assert_eq!(spec.service, "go-auth");
        assert_eq!(spec.version, "1.4.2");
        assert_eq!(spec.pulls, ["redis:7", "nginx:1"]);
    }
}
