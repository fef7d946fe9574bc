//! EC2 launch templates for deploy-standby's `asg` driver: find a template by
//! name, read what its latest version launches, create the template or a new
//! version, make a version the default; and the private addresses of the
//! instances a group launched.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    InstanceType, LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataEndpointState,
    LaunchTemplateInstanceMetadataOptionsRequest, LaunchTemplateTagSpecificationRequest,
    RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use sha2::{Digest, Sha256};

use super::platform::Launch;
use super::ProviderError;

/// What an instance launched from a template version gets: the settings
/// deploy-standby owns. Two versions with equal `LaunchSpec`s launch the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// The machine image.
    pub image_id: String,
    /// The instance type, e.g. `t3.micro`.
    pub instance_type: String,
    /// sha256 (hex) of the user-data, when there is any.
    pub user_data_sha256: Option<String>,
    /// Whether IMDSv2 is required (HttpTokens `required`).
    pub imdsv2_required: bool,
    /// Tags put on the instances it launches.
    pub instance_tags: BTreeMap<String, String>,
    /// The digest of the platform's settings it keeps (a base template's
    /// data and the direct flags, [`super::platform`]), written in the
    /// version's description.
    pub platform: Option<String>,
}

/// A launch template and what its latest version launches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Its id, `lt-...`.
    pub id: String,
    /// Its latest version number.
    pub latest_version: i64,
    /// Its default version number.
    pub default_version: i64,
    /// What the latest version launches.
    pub latest: LaunchSpec,
}

/// The sha256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The template named `name`, or `None` when there is none.
pub async fn find(client: &Client, name: &str) -> Result<Option<Template>, ProviderError> {
    let out = client
        .describe_launch_templates()
        .filters(super::ec2::filter("launch-template-name", &[name]))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("ec2:DescribeLaunchTemplates", &e))?;
    let Some(t) = out
        .launch_templates()
        .iter()
        .find(|t| t.launch_template_name() == Some(name))
    else {
        return Ok(None);
    };
    let id = t.launch_template_id().unwrap_or_default().to_owned();
    let versions = client
        .describe_launch_template_versions()
        .launch_template_id(&id)
        .versions("$Latest")
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("ec2:DescribeLaunchTemplateVersions", &e))?;
    let latest = versions.launch_template_versions().first();
    let data = latest.and_then(|v| v.launch_template_data());
    let spec = LaunchSpec {
        image_id: data
            .and_then(|d| d.image_id())
            .unwrap_or_default()
            .to_owned(),
        instance_type: data
            .and_then(|d| d.instance_type())
            .map_or("", |t| t.as_str())
            .to_owned(),
        user_data_sha256: data
            .and_then(|d| d.user_data())
            .filter(|u| !u.is_empty())
            .map(|u| {
                // An undecodable body can never equal ours: hash the text as it is.
                aws_smithy_types::base64::decode(u)
                    .map_or_else(|_| sha256_hex(u.as_bytes()), |b| sha256_hex(&b))
            }),
        imdsv2_required: data
            .and_then(|d| d.metadata_options())
            .and_then(|m| m.http_tokens())
            .is_some_and(|t| t.as_str() == "required"),
        instance_tags: data
            .map(|d| {
                d.tag_specifications()
                    .iter()
                    .filter(|s| s.resource_type().is_some_and(|r| r.as_str() == "instance"))
                    .flat_map(aws_sdk_ec2::types::LaunchTemplateTagSpecification::tags)
                    .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
        platform: latest
            .and_then(|v| v.version_description())
            .and_then(|d| d.split_once(" platform "))
            .map(|(_, fp)| fp.split_whitespace().next().unwrap_or_default().to_owned()),
    };
    Ok(Some(Template {
        id,
        latest_version: latest
            .and_then(aws_sdk_ec2::types::LaunchTemplateVersion::version_number)
            .or(t.latest_version_number())
            .unwrap_or(1),
        default_version: t.default_version_number().unwrap_or(1),
        latest: spec,
    }))
}

fn tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// The launch data of a version launching `spec`: the platform's (`base`)
/// with the image, instance type, user data and instance tags set, and
/// IMDSv2 required (hop limit 2, for containers) unless the base sets the
/// metadata options itself.
fn data(
    spec: &LaunchSpec,
    user_data: Option<&[u8]>,
    base: Option<&Launch>,
) -> RequestLaunchTemplateData {
    let mut d = base.map_or_else(
        || RequestLaunchTemplateData::builder().build(),
        |b| b.data.clone(),
    );
    d.image_id = Some(spec.image_id.clone());
    d.instance_type = Some(InstanceType::from(spec.instance_type.as_str()));
    // The API takes user-data base64-encoded.
    d.user_data = user_data.map(aws_smithy_types::base64::encode);
    if !base.is_some_and(|b| b.metadata_from_base) {
        let tokens = if spec.imdsv2_required {
            LaunchTemplateHttpTokensState::Required
        } else {
            LaunchTemplateHttpTokensState::Optional
        };
        d.metadata_options = Some(
            LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                .http_tokens(tokens)
                .http_put_response_hop_limit(2)
                .build(),
        );
    }
    d.tag_specifications.get_or_insert_with(Vec::new).push(
        LaunchTemplateTagSpecificationRequest::builder()
            .resource_type(ResourceType::Instance)
            .set_tags(Some(tags(&spec.instance_tags)))
            .build(),
    );
    d
}

/// The error code of a CreateLaunchTemplate whose name is taken.
pub const ALREADY_EXISTS: &str = "InvalidLaunchTemplateName.AlreadyExistsException";

/// Creates template `name` whose version 1 launches `spec`; returns its id.
pub async fn create(
    client: &Client,
    name: &str,
    (spec, base): (&LaunchSpec, Option<&Launch>),
    user_data: Option<&[u8]>,
    template_tags: &BTreeMap<String, String>,
) -> Result<String, ProviderError> {
    let out = client
        .create_launch_template()
        .launch_template_name(name)
        .version_description(description(spec))
        .launch_template_data(data(spec, user_data, base))
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::LaunchTemplate)
                .set_tags(Some(tags(template_tags)))
                .build(),
        )
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("ec2:CreateLaunchTemplate", &e))?;
    Ok(out
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .unwrap_or_default()
        .to_owned())
}

/// Adds a version launching `spec` to template `id`; returns its number.
pub async fn create_version(
    client: &Client,
    id: &str,
    (spec, base): (&LaunchSpec, Option<&Launch>),
    user_data: Option<&[u8]>,
) -> Result<i64, ProviderError> {
    let out = client
        .create_launch_template_version()
        .launch_template_id(id)
        .version_description(description(spec))
        .launch_template_data(data(spec, user_data, base))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("ec2:CreateLaunchTemplateVersion", &e))?;
    Ok(out
        .launch_template_version()
        .and_then(aws_sdk_ec2::types::LaunchTemplateVersion::version_number)
        .unwrap_or_default())
}

/// Makes `version` the default version of template `id`.
pub async fn set_default_version(
    client: &Client,
    id: &str,
    version: i64,
) -> Result<(), ProviderError> {
    client
        .modify_launch_template()
        .launch_template_id(id)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("ec2:ModifyLaunchTemplate", &e))?;
    Ok(())
}

/// The private IPv4 address of each of `instance_ids` that has one.
pub async fn private_ips(
    client: &Client,
    instance_ids: &[String],
) -> Result<BTreeMap<String, String>, ProviderError> {
    if instance_ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let ids: Vec<&str> = instance_ids.iter().map(String::as_str).collect();
    let instances =
        super::ec2::describe_instances(client, vec![super::ec2::filter("instance-id", &ids)])
            .await?;
    Ok(instances
        .iter()
        .filter_map(|i| {
            Some((
                i.instance_id()?.to_owned(),
                i.private_ip_address()?.to_owned(),
            ))
        })
        .collect())
}

fn description(spec: &LaunchSpec) -> String {
    let version = spec
        .instance_tags
        .get("version")
        .map_or(String::new(), |v| format!(" version {v}"));
    let platform = spec
        .platform
        .as_ref()
        .map_or(String::new(), |p| format!(" platform {p}"));
    format!(
        "switchyard deploy-standby:{version} {}{platform}",
        spec.image_id
    )
}

/// A launch template as listed: its id, name and version numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its id, `lt-...`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its default version number.
    pub default_version: i64,
    /// Its latest version number.
    pub latest_version: i64,
}

/// Every launch template tagged `service=<service>` (deploy-standby tags
/// the templates it makes so), across every page.
pub async fn of_service(client: &Client, service: &str) -> Result<Vec<Listed>, ProviderError> {
    let mut found = Vec::new();
    let mut pages = client
        .describe_launch_templates()
        .filters(super::ec2::filter("tag:service", &[service]))
        .max_results(200)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ProviderError::from_sdk("ec2:DescribeLaunchTemplates", &e))?;
        for t in page.launch_templates() {
            found.push(Listed {
                id: t.launch_template_id().unwrap_or_default().to_owned(),
                name: t.launch_template_name().unwrap_or_default().to_owned(),
                default_version: t.default_version_number().unwrap_or(1),
                latest_version: t.latest_version_number().unwrap_or(1),
            });
        }
    }
    Ok(found)
}

/// The image each of `versions` of template `id` launches (`3`, `$Latest`,
/// `$Default`), keyed by version number; a version without an image is left
/// out. Nothing is sent for an empty list.
pub async fn images_of_versions(
    client: &Client,
    id: &str,
    versions: &[String],
) -> Result<BTreeMap<i64, String>, ProviderError> {
    let mut images = BTreeMap::new();
    // DescribeLaunchTemplateVersions takes up to 200 versions a call.
    for chunk in versions.chunks(200) {
        let out = client
            .describe_launch_template_versions()
            .launch_template_id(id)
            .set_versions(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| ProviderError::from_sdk("ec2:DescribeLaunchTemplateVersions", &e))?;
        for v in out.launch_template_versions() {
            if let (Some(number), Some(image)) = (
                v.version_number(),
                v.launch_template_data().and_then(|d| d.image_id()),
            ) {
                images.insert(number, image.to_owned());
            }
        }
    }
    Ok(images)
}

/// The version numbers of template `id`, newest first, across every page.
pub async fn version_numbers(client: &Client, id: &str) -> Result<Vec<i64>, ProviderError> {
    let mut numbers = Vec::new();
    let mut pages = client
        .describe_launch_template_versions()
        .launch_template_id(id)
        .max_results(200)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| ProviderError::from_sdk("ec2:DescribeLaunchTemplateVersions", &e))?;
        numbers.extend(
            page.launch_template_versions()
                .iter()
                .filter_map(aws_sdk_ec2::types::LaunchTemplateVersion::version_number),
        );
    }
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    numbers.dedup();
    Ok(numbers)
}

/// Deletes `versions` of template `id` (up to 200 a call); returns the ones
/// EC2 refused, each with its reason. A version already gone counts as deleted.
pub async fn delete_versions(
    client: &Client,
    id: &str,
    versions: &[i64],
) -> Result<Vec<(i64, String)>, ProviderError> {
    let mut refused = Vec::new();
    for chunk in versions.chunks(200) {
        let out = client
            .delete_launch_template_versions()
            .launch_template_id(id)
            .set_versions(Some(chunk.iter().map(ToString::to_string).collect()))
            .send()
            .await
            .map_err(|e| ProviderError::from_sdk("ec2:DeleteLaunchTemplateVersions", &e))?;
        for r in out.unsuccessfully_deleted_launch_template_versions() {
            let Some(number) = r.version_number() else {
                continue;
            };
            let error = r.response_error();
            let code = error.and_then(|e| e.code()).map_or("", |c| c.as_str());
            if code == "launchTemplateVersionDoesNotExist" {
                continue;
            }
            refused.push((
                number,
                format!(
                    "{code}: {}",
                    error.and_then(|e| e.message()).unwrap_or("no message")
                ),
            ));
        }
    }
    Ok(refused)
}

/// The versions of launch templates that are in use, and why: each of
/// `templates`' default and latest version, and the version each of `groups`
/// launches from and its instances were launched from. Keyed by template id,
/// then version (a number; `$Latest` or `$Default` only for a group's
/// template that is not among `templates`).
pub fn versions_in_use(
    templates: &[Listed],
    groups: &[super::autoscaling::Group],
) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut used: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut mark = |id: &str, version: String, why: String| {
        used.entry(id.to_owned())
            .or_default()
            .entry(version)
            .or_insert(why);
    };
    for t in templates {
        mark(
            &t.id,
            t.default_version.to_string(),
            format!("the default version of launch template {}", t.name),
        );
        mark(
            &t.id,
            t.latest_version.to_string(),
            format!("the latest version of launch template {}", t.name),
        );
    }
    for g in groups {
        let Some((id, version)) = &g.launch_template else {
            continue;
        };
        let known = templates.iter().find(|t| &t.id == id);
        let resolve = |v: &str| match (v, known) {
            ("$Latest", Some(t)) => t.latest_version.to_string(),
            ("$Default", Some(t)) => t.default_version.to_string(),
            _ => v.to_owned(),
        };
        mark(
            id,
            resolve(version),
            format!("launched from by Auto Scaling group {}", g.name),
        );
        for i in &g.instances {
            if let Some(v) = &i.template_version {
                mark(
                    id,
                    resolve(v),
                    format!("instance {} of Auto Scaling group {} runs it", i.id, g.name),
                );
            }
        }
    }
    used
}
