//! A Packer-compatible manifest (the `manifest` post-processor's format), for
//! tools that read Packer's: `builds[]` with `artifact_id`
//! `"region:ami-id,region:ami-id"`, `builder_type`, `build_time`,
//! `packer_run_uuid` and `custom_data`, plus `last_run_uuid`. Like Packer, a
//! run appends its build to the file's `builds` when the file exists.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::BakeError;

/// One build's entry.
#[derive(Debug, Clone)]
pub struct ManifestBuild {
    /// Image id per region.
    pub amis: BTreeMap<String, String>,
    /// Unix time of the build.
    pub build_time: i64,
    /// This run's id (a random UUID, as Packer's).
    pub run_uuid: String,
    /// Free-form fields: service, version, input hash, bake id, source image.
    pub custom_data: BTreeMap<String, String>,
}

impl ManifestBuild {
    /// `"us-east-1:ami-1,eu-west-1:ami-2"`, the home region first, as Packer lists them.
    pub fn artifact_id(&self, home: &str) -> String {
        let mut parts: Vec<String> = self
            .amis
            .get(home)
            .map(|ami| format!("{home}:{ami}"))
            .into_iter()
            .collect();
        parts.extend(
            self.amis
                .iter()
                .filter(|(region, _)| *region != home)
                .map(|(region, ami)| format!("{region}:{ami}")),
        );
        parts.join(",")
    }
}

/// Writes (or extends) the manifest at `path`, atomically.
pub fn write(path: &Path, build: &ManifestBuild, home: &str) -> Result<(), BakeError> {
    let err = |error: String| BakeError::Manifest {
        path: path.display().to_string(),
        error,
    };
    let mut doc = match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(err(
                    "it exists but is not a JSON object; remove it or pick another path".into(),
                ))
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(err(e.to_string())),
    };
    let entry = json!({
        "name": "bake-ami",
        "builder_type": "amazon-ebs",
        "build_time": build.build_time,
        "files": null,
        "artifact_id": build.artifact_id(home),
        "packer_run_uuid": build.run_uuid,
        "custom_data": build.custom_data,
    });
    match doc.get_mut("builds") {
        Some(Value::Array(builds)) => builds.push(entry),
        _ => {
            doc.insert("builds".into(), Value::Array(vec![entry]));
        }
    }
    doc.insert("last_run_uuid".into(), build.run_uuid.clone().into());
    let mut bytes =
        serde_json::to_vec_pretty(&Value::Object(doc)).map_err(|e| err(e.to_string()))?;
    bytes.push(b'\n');
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| err(e.to_string()))?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| err(e.to_string()))?;
    tmp.persist(path).map_err(|e| err(e.error.to_string()))?;
    Ok(())
}

/// A random UUID (version 4), as Packer's run ids are.
pub fn run_uuid() -> String {
    let mut bytes = [0_u8; 16];
    for b in &mut bytes {
        *b = fastrand::u8(..);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = bytes.iter().fold(String::with_capacity(32), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_reads_as_packers_and_accumulates_builds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json");
        let build = ManifestBuild {
            amis: BTreeMap::from([
                ("eu-west-1".into(), "ami-2".into()),
                ("us-east-1".into(), "ami-1".into()),
            ]),
            build_time: 1_700_000_000,
            run_uuid: run_uuid(),
            custom_data: BTreeMap::from([("service".into(), "go-auth".into())]),
        };
        write(&path, &build, "us-east-1").unwrap();
        write(&path, &build, "us-east-1").unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["builds"].as_array().unwrap().len(), 2);
        assert_eq!(
            doc["builds"][0]["artifact_id"],
            "us-east-1:ami-1,eu-west-1:ami-2"
        );
        assert_eq!(doc["builds"][0]["builder_type"], "amazon-ebs");
        assert_eq!(doc["builds"][0]["custom_data"]["service"], "go-auth");
        assert_eq!(doc["last_run_uuid"], build.run_uuid);
        assert_eq!(build.run_uuid.len(), 36);
        assert_eq!(&build.run_uuid[14..15], "4");
    }
}
