//! The checked inputs of a bake, the built-in provisioning script, and the
//! input hash.
//!
//! # The input hash
//!
//! sha256 over a versioned text of everything that decides what the image
//! holds: the resolved source image id (not the filter: a new base image
//! means a new hash), the service, the instance type, the success marker, the
//! pulled images in order, and the sha256 of the provisioning script as sent
//! (for the built-in script that covers the pulls again). The version is left
//! out on purpose: a release that changes nothing in the image reuses the
//! last one. The regions are left out too: a reused image is copied to the
//! regions it is missing in.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::BakeError;

/// EC2's limit on user-data before base64 encoding.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// The marker the built-in script prints when provisioning succeeded.
pub const DEFAULT_MARKER: &str = "switchyard-bake: provisioning complete";

/// Where the base image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One image id.
    Ami(String),
    /// The newest image whose name matches `name` (EC2 wildcards `*`, `?`),
    /// owned by one of `owners`.
    Filter { name: String, owners: Vec<String> },
}

/// The provisioning script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// A user-data file's body, sent as it is.
    File { path: String, body: String },
    /// The built-in script: security updates, docker, the pulls, the marker, poweroff.
    BuiltIn,
}

/// Everything a bake needs, checked.
#[derive(Debug, Clone)]
pub struct BakeSpec {
    /// The service the image is for.
    pub service: String,
    /// The version it is baked for (a tag and part of the name, not of the hash).
    pub version: String,
    /// The base image.
    pub source: Source,
    /// The provisioning script.
    pub script: Script,
    /// Container images the built-in script pulls.
    pub pulls: Vec<String>,
    /// The line the console must show for the bake to count as provisioned.
    pub marker: String,
    /// The builder's instance type.
    pub instance_type: String,
    /// The builder's subnet (default: the default VPC's).
    pub subnet_id: Option<String>,
    /// The builder's security groups (default: the VPC's default group).
    pub security_group_ids: Vec<String>,
    /// Regions the image is copied to, besides the home region.
    pub copy_to: Vec<String>,
    /// Bake again even when an image with the same input hash exists.
    pub force: bool,
}

impl BakeSpec {
    /// The user-data sent to the builder.
    pub fn user_data(&self) -> String {
        match &self.script {
            Script::File { body, .. } => body.clone(),
            Script::BuiltIn => built_in_script(&self.pulls, &self.marker),
        }
    }

    /// The input hash (see the module documentation), as 64 hex digits.
    pub fn input_hash(&self, source_image_id: &str) -> String {
        let mut text = String::from("switchyard/bake/v1\n");
        let _ = writeln!(text, "source-image={source_image_id}");
        let _ = writeln!(text, "service={}", self.service);
        let _ = writeln!(text, "instance-type={}", self.instance_type);
        let _ = writeln!(text, "success-marker={}", self.marker);
        for pull in &self.pulls {
            let _ = writeln!(text, "pull={pull}");
        }
        let _ = writeln!(text, "user-data-sha256={}", sha256_hex(&self.user_data()));
        sha256_hex(&text)
    }

    /// Checks the flags that need no network call.
    pub fn check(&self) -> Result<(), BakeError> {
        check_name("--service", &self.service)?;
        check_name("--version", &self.version)?;
        match &self.source {
            Source::Ami(id) => check_id("--source-ami", id, "ami-")?,
            Source::Filter { name, owners } => {
                if name.trim().is_empty() {
                    return Err(input("--source-name is empty; give a name pattern, e.g. 'ubuntu/images/*-24.04-amd64-server-*'"));
                }
                if owners.is_empty() {
                    return Err(input(
                        "--source-name needs --owner (an account id, or amazon, self, aws-marketplace): \
                         without it anyone's public image of that name could be picked",
                    ));
                }
            }
        }
        for pull in &self.pulls {
            check_pull(pull)?;
        }
        if matches!(self.script, Script::File { .. }) && !self.pulls.is_empty() {
            return Err(input(
                "--pull is for the built-in script; with --user-data, pull the images in your own script",
            ));
        }
        check_marker(&self.marker)?;
        let size = self.user_data().len();
        if size > USER_DATA_LIMIT {
            return Err(input(&format!(
                "the user-data is {size} bytes; EC2 takes at most {USER_DATA_LIMIT}: \
                 move the work into a script the user-data downloads, or into the base image"
            )));
        }
        if self.instance_type.is_empty()
            || !self
                .instance_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(input(&format!(
                "--instance-type {:?} is not an instance type, e.g. t3.small",
                self.instance_type
            )));
        }
        if let Some(subnet) = &self.subnet_id {
            check_id("--subnet-id", subnet, "subnet-")?;
        }
        for group in &self.security_group_ids {
            check_id("--security-group-id", group, "sg-")?;
        }
        let mut seen = Vec::new();
        for region in &self.copy_to {
            crate::aws::check_region("--copy-to", region).map_err(|e| input(&e.to_string()))?;
            if seen.contains(region) {
                return Err(input(&format!("--copy-to names {region} twice")));
            }
            seen.push(region.clone());
        }
        Ok(())
    }

    /// The tags of images and snapshots (status in progress).
    pub fn image_tags(
        &self,
        source_image_id: &str,
        input_hash: &str,
        bake_id: &str,
    ) -> BTreeMap<String, String> {
        let mut tags = self.common_tags(bake_id);
        tags.insert(super::TAG_SOURCE.into(), source_image_id.into());
        tags.insert(super::TAG_INPUT_HASH.into(), input_hash.into());
        tags.insert(super::TAG_STATUS.into(), super::STATUS_IN_PROGRESS.into());
        tags.insert("Name".into(), self.image_name(bake_id));
        tags
    }

    /// The tags of the builder instance and its volumes.
    pub fn builder_tags(&self, bake_id: &str) -> BTreeMap<String, String> {
        let mut tags = self.common_tags(bake_id);
        tags.insert(super::TAG_PURPOSE.into(), super::PURPOSE_BAKE.into());
        tags.insert(
            "Name".into(),
            format!("bake-ami builder {} {}", self.service, self.version),
        );
        tags
    }

    fn common_tags(&self, bake_id: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (super::TAG_BAKE_ID.to_owned(), bake_id.to_owned()),
            (super::TAG_SERVICE.to_owned(), self.service.clone()),
            (super::TAG_VERSION.to_owned(), self.version.clone()),
        ])
    }

    /// The image's name: unique per bake, as EC2 wants names unique per region.
    pub fn image_name(&self, bake_id: &str) -> String {
        format!("{}-{}-{}", self.service, self.version, bake_id)
    }
}

/// The built-in provisioning script: security updates, docker, the pulls,
/// the success marker on the console, poweroff. On any failure it prints a
/// failure line and powers off too, so the bake fails fast rather than at
/// the deadline. Pulls and the marker are checked to hold no shell syntax.
pub fn built_in_script(pulls: &[String], marker: &str) -> String {
    let mut script = String::from(
        r#"#!/bin/bash
# switchyard bake-ami: the built-in provisioning script.
set -euo pipefail
say() { echo "$*"; echo "$*" > /dev/console 2>/dev/null || true; }
trap 'say "switchyard-bake: provisioning FAILED at line $LINENO"; sync; poweroff' ERR
say "switchyard-bake: provisioning started"
if command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get upgrade -y -q
  apt-get install -y -q docker.io
elif command -v dnf >/dev/null; then
  dnf upgrade -y -q --security
  dnf install -y -q docker
else
  yum update -y -q --security
  yum install -y -q docker
fi
systemctl enable --now docker
"#,
    );
    for pull in pulls {
        let _ = writeln!(script, "docker pull '{pull}'");
    }
    let _ = write!(script, "sync\nsay '{marker}'\npoweroff\n");
    script
}

/// sha256 of `text` as 64 lowercase hex digits.
pub fn sha256_hex(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

fn input(message: &str) -> BakeError {
    BakeError::Input(message.to_owned())
}

fn check_name(flag: &str, value: &str) -> Result<(), BakeError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(input(&format!(
            "{flag} {value:?} must be 1 to 64 letters, digits, '.', '_' or '-', starting with a \
             letter or digit (it becomes part of the image name)"
        )))
    }
}

fn check_id(flag: &str, value: &str, prefix: &str) -> Result<(), BakeError> {
    let rest = value.strip_prefix(prefix).unwrap_or_default();
    if rest.len() >= 8 && rest.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(input(&format!(
            "{flag} {value:?} is not an id of the form {prefix}0123456789abcdef0"
        )))
    }
}

fn check_pull(value: &str) -> Result<(), BakeError> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(input(&format!(
            "--pull {value:?} is not a container image reference, e.g. ghcr.io/acme/go-auth:1.4.2"
        )))
    }
}

fn check_marker(value: &str) -> Result<(), BakeError> {
    let ok = value.len() >= 4
        && value.len() <= 200
        && value
            .chars()
            .all(|c| (c.is_ascii_graphic() || c == ' ') && c != '\'' && c != '\\');
    if ok {
        Ok(())
    } else {
        Err(input(&format!(
            "--success-marker {value:?} must be 4 to 200 printable ASCII characters without \
             quotes or backslashes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> BakeSpec {
        BakeSpec {
            service: "go-auth".into(),
            version: "1.4.2".into(),
            source: Source::Ami("ami-0123456789abcdef0".into()),
            script: Script::BuiltIn,
            pulls: vec!["ghcr.io/acme/go-auth:1.4.2".into()],
            marker: DEFAULT_MARKER.into(),
            instance_type: "t3.small".into(),
            subnet_id: None,
            security_group_ids: Vec::new(),
            copy_to: vec!["eu-west-1".into()],
            force: false,
        }
    }

    #[test]
    fn the_hash_covers_what_makes_the_image_and_nothing_else() {
        let base = spec();
        let h = base.input_hash("ami-1");
        assert_eq!(h.len(), 64);
        assert_eq!(h, base.input_hash("ami-1"), "stable");
        assert_ne!(h, base.input_hash("ami-2"), "source image");
        let mut other = base.clone();
        other.version = "1.4.3".into();
        other.copy_to.clear();
        other.force = true;
        assert_eq!(
            h,
            other.input_hash("ami-1"),
            "version, regions, force do not count"
        );
        let mut other = base.clone();
        other.pulls.push("redis:7".into());
        assert_ne!(h, other.input_hash("ami-1"), "pulls");
        let mut other = base.clone();
        other.script = Script::File {
            path: "x.sh".into(),
            body: "#!/bin/sh\npoweroff\n".into(),
        };
        assert_ne!(h, other.input_hash("ami-1"), "script");
        let mut other = base;
        other.instance_type = "m7g.large".into();
        assert_ne!(h, other.input_hash("ami-1"), "instance type");
    }

    #[test]
    fn the_built_in_script_pulls_prints_the_marker_and_powers_off() {
        let s = built_in_script(
            &["redis:7".into(), "ghcr.io/a/b@sha256:00".into()],
            "DONE OK",
        );
        assert!(s.starts_with("#!/bin/bash\n"));
        assert!(s.contains("docker pull 'redis:7'\ndocker pull 'ghcr.io/a/b@sha256:00'\n"));
        assert!(s.ends_with("sync\nsay 'DONE OK'\npoweroff\n"), "{s}");
        assert!(s.contains("trap '"), "a failure powers off too");
    }

    #[test]
    fn bad_input_names_the_flag() {
        let err = |f: &dyn Fn(&mut BakeSpec)| {
            let mut s = spec();
            f(&mut s);
            s.check().unwrap_err().to_string()
        };
        assert!(err(&|s| s.pulls = vec!["redis; rm -rf /".into()]).starts_with("--pull"));
        assert!(err(&|s| s.marker = "it's done".into()).starts_with("--success-marker"));
        assert!(err(&|s| s.source = Source::Ami("ubuntu".into())).starts_with("--source-ami"));
        assert!(err(&|s| s.source = Source::Filter {
            name: "base-*".into(),
            owners: vec![]
        })
        .contains("needs --owner"));
        assert!(
            err(&|s| s.copy_to = vec!["eu-west-1".into(), "eu-west-1".into()]).contains("twice")
        );
        assert!(err(&|s| s.version = "1.0+build".into()).starts_with("--version"));
        assert!(err(&|s| {
            s.pulls.clear();
            s.script = Script::File {
                path: "a".into(),
                body: "x".repeat(USER_DATA_LIMIT + 1),
            };
        })
        .contains("user-data is"));
        assert!(spec().check().is_ok());
    }
}
