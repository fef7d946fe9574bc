//! What a platform team sets on every instance, kept in each color's launch
//! template: a base template's launch data (its instance profile, security
//! groups, key pair, block devices, network interfaces, metadata options,
//! monitoring, placement and tags), and the direct flags for the common
//! parts. deploy-standby then sets only the image, the user data and its own
//! tags.
//!
//! The base's data is read with DescribeLaunchTemplateVersions and written
//! into each color's version field by field. A field this build does not
//! carry over is named in a warning, never dropped in silence.

use aws_sdk_ec2::types::{
    LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest, LaunchTemplatePlacementRequest,
    LaunchTemplateTagSpecificationRequest, LaunchTemplatesMonitoringRequest,
    RequestLaunchTemplateData, ResponseLaunchTemplateData, VolumeType,
};
use aws_sdk_ec2::Client;

use super::launch_template::sha256_hex;
use super::ProviderError;

/// A base template: `NAME`, `lt-ID`, either with `:VERSION` (a number,
/// `$Default` or `$Latest`; default `$Default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseTemplate {
    /// Its name or id.
    pub template: String,
    /// The version to copy.
    pub version: String,
}

impl BaseTemplate {
    /// Reads `NAME|ID[:VERSION]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (template, version) = match text.rsplit_once(':') {
            Some((t, v)) => (t, v),
            None => (text, "$Default"),
        };
        let version_ok = version == "$Default"
            || version == "$Latest"
            || (version.parse::<u32>().is_ok_and(|v| v >= 1));
        if !version_ok {
            return Err(format!(
                "--launch-template {text:?}: the version must be a number, $Default or $Latest"
            ));
        }
        let name_ok = (3..=128).contains(&template.len())
            && template
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "()./_-".contains(c));
        if !name_ok {
            return Err(format!(
                "--launch-template {text:?}: a launch template name (3 to 128 of letters, digits and ()./_-) or id (lt-...)"
            ));
        }
        Ok(Self {
            template: template.to_owned(),
            version: version.to_owned(),
        })
    }

    fn is_id(&self) -> bool {
        self.template.starts_with("lt-")
    }
}

/// The platform's settings for every instance of the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platform {
    /// A template whose launch data each color's version starts from.
    pub base: Option<BaseTemplate>,
    /// The instance profile (name, or ARN).
    pub instance_profile: Option<String>,
    /// Security group ids, in place of the base's.
    pub security_groups: Vec<String>,
    /// The key pair.
    pub key_name: Option<String>,
    /// The root volume's size in GiB.
    pub root_volume_gib: Option<i32>,
}

impl Platform {
    /// Whether it sets nothing (a color's version is made from scratch).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The role `iam:PassRole` is needed on: the instance profile's, taken
    /// to have the profile's name (as the console and most tools make them).
    pub fn role_arn(&self) -> Option<String> {
        let profile = self.instance_profile.as_deref()?;
        let name = profile.rsplit('/').next().unwrap_or(profile);
        Some(format!("arn:aws:iam::*:role/{name}"))
    }
}

/// What a color's versions start from.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The launch data, before the image, user data, instance type and tags.
    pub data: RequestLaunchTemplateData,
    /// The base's instance type, when it names one.
    pub instance_type: Option<String>,
    /// Whether the base sets metadata options (then they are kept as they are).
    pub metadata_from_base: bool,
    /// Whether the instances are to require IMDSv2.
    pub imdsv2_required: bool,
    /// The base's tags for instances (deploy-standby's own override them).
    pub instance_tags: Vec<(String, String)>,
    /// A short digest of all of it: two equal digests launch the same.
    pub fingerprint: String,
}

/// Reads the base template (one call) and the image's root device (one call,
/// only with a root volume size), and builds what each color's version starts from.
pub async fn resolve(
    client: &Client,
    platform: &Platform,
    image_id: &str,
) -> Result<Launch, ProviderError> {
    let base = match &platform.base {
        None => None,
        Some(b) => {
            let mut call = client
                .describe_launch_template_versions()
                .versions(&b.version);
            call = if b.is_id() {
                call.launch_template_id(&b.template)
            } else {
                call.launch_template_name(&b.template)
            };
            let out = call
                .send()
                .await
                .map_err(|e| ProviderError::from_sdk("ec2:DescribeLaunchTemplateVersions", &e))?;
            let data = out
                .launch_template_versions()
                .first()
                .and_then(|v| v.launch_template_data())
                .cloned()
                .ok_or_else(|| ProviderError {
                    operation: "ec2:DescribeLaunchTemplateVersions",
                    code: None,
                    message: format!(
                        "launch template {} has no version {}",
                        b.template, b.version
                    ),
                })?;
            Some(data)
        }
    };
    let root_device = if platform.root_volume_gib.is_some() {
        let out = client
            .describe_images()
            .image_ids(image_id)
            .send()
            .await
            .map_err(|e| ProviderError::from_sdk("ec2:DescribeImages", &e))?;
        out.images()
            .first()
            .and_then(|i| i.root_device_name())
            .map(str::to_owned)
    } else {
        None
    };
    let launch = build(base.as_ref(), platform, root_device.as_deref());
    Ok(launch)
}

/// The launch data from the base's data and the flags; pure, so that what
/// AWS refuses (security group ids beside network interfaces) is tested offline.
pub fn build(
    base: Option<&ResponseLaunchTemplateData>,
    platform: &Platform,
    root_device: Option<&str>,
) -> Launch {
    let mut parts = Parts {
        imdsv2_required: true,
        ..Parts::default()
    };
    if let Some(d) = base {
        skipped(d);
        parts.copy_base(d);
    }
    parts.apply_flags(platform, root_device);
    parts.finish()
}

/// The launch data as it is put together.
#[derive(Default)]
struct Parts {
    data: aws_sdk_ec2::types::builders::RequestLaunchTemplateDataBuilder,
    interfaces: Vec<LaunchTemplateInstanceNetworkInterfaceSpecificationRequest>,
    devices: Vec<LaunchTemplateBlockDeviceMappingRequest>,
    groups: Vec<String>,
    metadata_from_base: bool,
    imdsv2_required: bool,
    instance_tags: Vec<(String, String)>,
    instance_type: Option<String>,
    /// What makes the fingerprint: one line per setting.
    text: Vec<String>,
}

impl Parts {
    fn set(
        &mut self,
        f: impl FnOnce(
            aws_sdk_ec2::types::builders::RequestLaunchTemplateDataBuilder,
        ) -> aws_sdk_ec2::types::builders::RequestLaunchTemplateDataBuilder,
    ) {
        self.data = f(std::mem::take(&mut self.data));
    }

    fn copy_base(&mut self, d: &ResponseLaunchTemplateData) {
        if let Some(p) = d.iam_instance_profile() {
            let profile = LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .set_arn(p.arn().map(str::to_owned))
                .set_name(p.name().map(str::to_owned))
                .build();
            self.set(|b| b.iam_instance_profile(profile));
            self.text
                .push(format!("profile={:?}/{:?}", p.arn(), p.name()));
        }
        self.devices
            .extend(d.block_device_mappings().iter().map(device));
        self.interfaces
            .extend(d.network_interfaces().iter().map(interface));
        self.groups.extend(d.security_group_ids().iter().cloned());
        if !d.security_groups().is_empty() {
            let names = d.security_groups().to_vec();
            self.text.push(format!("security_groups={names:?}"));
            self.set(|b| b.set_security_groups(Some(names)));
        }
        if let Some(k) = d.key_name() {
            self.text.push(format!("key={k}"));
            self.set(|b| b.key_name(k));
        }
        if let Some(m) = d.monitoring() {
            let monitoring = LaunchTemplatesMonitoringRequest::builder()
                .set_enabled(m.enabled())
                .build();
            self.text.push(format!("monitoring={:?}", m.enabled()));
            self.set(|b| b.monitoring(monitoring));
        }
        if let Some(e) = d.ebs_optimized() {
            self.text.push(format!("ebs_optimized={e}"));
            self.set(|b| b.ebs_optimized(e));
        }
        if let Some(p) = d.placement() {
            let placement = LaunchTemplatePlacementRequest::builder()
                .set_availability_zone(p.availability_zone().map(str::to_owned))
                .set_group_name(p.group_name().map(str::to_owned))
                .set_tenancy(p.tenancy().cloned())
                .set_partition_number(p.partition_number())
                .build();
            self.text.push(format!("placement={p:?}"));
            self.set(|b| b.placement(placement));
        }
        if let Some(m) = d.metadata_options() {
            self.metadata_from_base = true;
            self.imdsv2_required = m.http_tokens().is_some_and(|t| t.as_str() == "required");
            let options = LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .set_http_tokens(m.http_tokens().cloned())
                .set_http_put_response_hop_limit(m.http_put_response_hop_limit())
                .set_http_endpoint(m.http_endpoint().cloned())
                .set_http_protocol_ipv6(m.http_protocol_ipv6().cloned())
                .set_instance_metadata_tags(m.instance_metadata_tags().cloned())
                .build();
            self.text.push(format!("metadata={m:?}"));
            self.set(|b| b.metadata_options(options));
        }
        for spec in d.tag_specifications() {
            let tags: Vec<(String, String)> = spec
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
                .collect();
            self.text
                .push(format!("tags={:?}={tags:?}", spec.resource_type()));
            if spec
                .resource_type()
                .is_some_and(|r| r.as_str() == "instance")
            {
                self.instance_tags.extend(tags);
            } else {
                let request = LaunchTemplateTagSpecificationRequest::builder()
                    .set_resource_type(spec.resource_type().cloned())
                    .set_tags(Some(spec.tags().to_vec()))
                    .build();
                self.set(|b| b.tag_specifications(request));
            }
        }
        self.instance_type = d.instance_type().map(|t| t.as_str().to_owned());
        self.text
            .push(format!("instance_type={:?}", self.instance_type));
    }

    /// The direct flags, over the base.
    fn apply_flags(&mut self, platform: &Platform, root_device: Option<&str>) {
        if let Some(profile) = &platform.instance_profile {
            let spec = if profile.starts_with("arn:") {
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder().arn(profile)
            } else {
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder().name(profile)
            };
            self.text.push(format!("flag profile={profile}"));
            self.set(|b| b.iam_instance_profile(spec.build()));
        }
        if !platform.security_groups.is_empty() {
            self.groups.clone_from(&platform.security_groups);
            self.text.push(format!("flag groups={:?}", self.groups));
        }
        if let Some(k) = &platform.key_name {
            self.text.push(format!("flag key={k}"));
            self.set(|b| b.key_name(k));
        }
        if let (Some(size), Some(device)) = (platform.root_volume_gib, root_device) {
            self.resize_root(device, size);
        }
    }

    /// The root device's mapping as the base has it (or a new gp3 one), at
    /// `size` GiB.
    fn resize_root(&mut self, device: &str, size: i32) {
        let ebs = self
            .devices
            .iter()
            .find(|d| d.device_name() == Some(device))
            .and_then(|d| d.ebs().cloned());
        self.devices.retain(|d| d.device_name() != Some(device));
        let ebs = match ebs {
            Some(mut e) => {
                e.volume_size = Some(size);
                e
            }
            None => LaunchTemplateEbsBlockDeviceRequest::builder()
                .volume_size(size)
                .volume_type(VolumeType::Gp3)
                .delete_on_termination(true)
                .build(),
        };
        self.devices.insert(
            0,
            LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name(device)
                .ebs(ebs)
                .build(),
        );
        self.text.push(format!("flag root={device}:{size}"));
    }

    fn finish(mut self) -> Launch {
        // AWS refuses security group ids beside network interfaces: then
        // the groups belong to the primary interface.
        if !self.groups.is_empty() {
            let groups = self.groups.clone();
            if let Some(primary) = self
                .interfaces
                .iter_mut()
                .find(|n| n.device_index().unwrap_or(0) == 0)
            {
                primary.groups = Some(groups);
            } else {
                self.set(|b| b.set_security_group_ids(Some(groups)));
            }
        }
        let mut text = std::mem::take(&mut self.text);
        text.extend(self.devices.iter().map(|d| format!("device={d:?}")));
        text.extend(self.interfaces.iter().map(|n| format!("interface={n:?}")));
        text.push(format!("groups={:?}", self.groups));
        let (devices, interfaces) = (
            std::mem::take(&mut self.devices),
            std::mem::take(&mut self.interfaces),
        );
        if !devices.is_empty() {
            self.set(|b| b.set_block_device_mappings(Some(devices)));
        }
        if !interfaces.is_empty() {
            self.set(|b| b.set_network_interfaces(Some(interfaces)));
        }
        Launch {
            data: self.data.build(),
            instance_type: self.instance_type,
            metadata_from_base: self.metadata_from_base,
            imdsv2_required: self.imdsv2_required,
            instance_tags: self.instance_tags,
            fingerprint: sha256_hex(text.join("\n").as_bytes())[..12].to_owned(),
        }
    }
}

/// A base block device mapping, as a request.
fn device(
    m: &aws_sdk_ec2::types::LaunchTemplateBlockDeviceMapping,
) -> LaunchTemplateBlockDeviceMappingRequest {
    let ebs = m.ebs().map(|e| {
        LaunchTemplateEbsBlockDeviceRequest::builder()
            .set_encrypted(e.encrypted())
            .set_delete_on_termination(e.delete_on_termination())
            .set_iops(e.iops())
            .set_kms_key_id(e.kms_key_id().map(str::to_owned))
            .set_snapshot_id(e.snapshot_id().map(str::to_owned))
            .set_volume_size(e.volume_size())
            .set_volume_type(e.volume_type().cloned())
            .set_throughput(e.throughput())
            .build()
    });
    LaunchTemplateBlockDeviceMappingRequest::builder()
        .set_device_name(m.device_name().map(str::to_owned))
        .set_virtual_name(m.virtual_name().map(str::to_owned))
        .set_no_device(m.no_device().map(str::to_owned))
        .set_ebs(ebs)
        .build()
}

/// A base network interface, as a request.
fn interface(
    n: &aws_sdk_ec2::types::LaunchTemplateInstanceNetworkInterfaceSpecification,
) -> LaunchTemplateInstanceNetworkInterfaceSpecificationRequest {
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
        .set_associate_public_ip_address(n.associate_public_ip_address())
        .set_delete_on_termination(n.delete_on_termination())
        .set_description(n.description().map(str::to_owned))
        .set_device_index(n.device_index())
        .set_groups(Some(n.groups().to_vec()))
        .set_interface_type(n.interface_type().map(str::to_owned))
        .set_ipv6_address_count(n.ipv6_address_count())
        .set_secondary_private_ip_address_count(n.secondary_private_ip_address_count())
        .set_subnet_id(n.subnet_id().map(str::to_owned))
        .set_network_card_index(n.network_card_index())
        .build()
}

/// Warns of the base's fields that are not carried over.
fn skipped(d: &ResponseLaunchTemplateData) {
    let mut names = Vec::new();
    let mut note = |set: bool, name: &'static str| {
        if set {
            names.push(name);
        }
    };
    note(d.kernel_id().is_some(), "KernelId");
    note(d.ram_disk_id().is_some(), "RamDiskId");
    note(
        d.instance_market_options().is_some(),
        "InstanceMarketOptions",
    );
    note(d.credit_specification().is_some(), "CreditSpecification");
    note(d.cpu_options().is_some(), "CpuOptions");
    note(
        d.capacity_reservation_specification().is_some(),
        "CapacityReservationSpecification",
    );
    note(
        !d.license_specifications().is_empty(),
        "LicenseSpecifications",
    );
    note(d.hibernation_options().is_some(), "HibernationOptions");
    note(d.enclave_options().is_some(), "EnclaveOptions");
    note(d.instance_requirements().is_some(), "InstanceRequirements");
    note(
        d.private_dns_name_options().is_some(),
        "PrivateDnsNameOptions",
    );
    note(d.maintenance_options().is_some(), "MaintenanceOptions");
    note(
        d.disable_api_termination().is_some(),
        "DisableApiTermination",
    );
    note(d.disable_api_stop().is_some(), "DisableApiStop");
    note(
        d.instance_initiated_shutdown_behavior().is_some(),
        "InstanceInitiatedShutdownBehavior",
    );
    if !names.is_empty() {
        tracing::warn!(
            "the base launch template sets {}, which this build does not carry over into the colors' versions",
            names.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{
        LaunchTemplateIamInstanceProfileSpecification,
        LaunchTemplateInstanceNetworkInterfaceSpecification,
    };

    use super::*;

    fn base_with_interface() -> ResponseLaunchTemplateData {
        ResponseLaunchTemplateData::builder()
            .iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecification::builder()
                    .name("web-host")
                    .build(),
            )
            .network_interfaces(
                LaunchTemplateInstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .associate_public_ip_address(false)
                    .groups("sg-base")
                    .build(),
            )
            .build()
    }

    #[test]
    fn base_templates_are_named_with_an_optional_version() {
        assert_eq!(
            BaseTemplate::parse("web-base").unwrap(),
            BaseTemplate {
                template: "web-base".into(),
                version: "$Default".into()
            }
        );
        assert_eq!(BaseTemplate::parse("lt-0abc123:7").unwrap().version, "7");
        assert_eq!(
            BaseTemplate::parse("web:$Latest").unwrap().version,
            "$Latest"
        );
        for bad in ["web:0", "web:latest", "w", "web base", "web:"] {
            assert!(BaseTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    /// AWS refuses SecurityGroupIds beside NetworkInterfaces (moto accepts
    /// both): with interfaces, the groups go on the primary interface.
    #[test]
    fn security_groups_go_on_the_primary_interface_when_the_base_has_interfaces() {
        let platform = Platform {
            security_groups: vec!["sg-flag".into()],
            ..Platform::default()
        };
        let launch = build(Some(&base_with_interface()), &platform, None);
        assert!(
            launch.data.security_group_ids().is_empty(),
            "{:?}",
            launch.data
        );
        assert_eq!(launch.data.network_interfaces()[0].groups(), ["sg-flag"]);
        assert_eq!(
            launch.data.iam_instance_profile().and_then(|p| p.name()),
            Some("web-host")
        );
        // Without interfaces, they are the instance's.
        let launch = build(None, &platform, None);
        assert_eq!(launch.data.security_group_ids(), ["sg-flag"]);
        assert!(launch.data.network_interfaces().is_empty());
    }

    #[test]
    fn the_fingerprint_follows_every_setting_and_imdsv2_is_required_by_default() {
        let plain = build(None, &Platform::default(), None);
        assert!(plain.imdsv2_required && !plain.metadata_from_base);
        let again = build(None, &Platform::default(), None);
        assert_eq!(plain.fingerprint, again.fingerprint);
        let key = build(
            None,
            &Platform {
                key_name: Some("ops".into()),
                ..Platform::default()
            },
            None,
        );
        assert_ne!(key.fingerprint, plain.fingerprint);
        let root = build(
            None,
            &Platform {
                root_volume_gib: Some(30),
                ..Platform::default()
            },
            Some("/dev/xvda"),
        );
        let mapping = &root.data.block_device_mappings()[0];
        assert_eq!(mapping.device_name(), Some("/dev/xvda"));
        assert_eq!(
            mapping
                .ebs()
                .and_then(LaunchTemplateEbsBlockDeviceRequest::volume_size),
            Some(30)
        );
        assert_ne!(root.fingerprint, plain.fingerprint);
        assert_eq!(
            Platform {
                instance_profile: Some(
                    "arn:aws:iam::123456789012:instance-profile/web-host".into()
                ),
                ..Platform::default()
            }
            .role_arn()
            .as_deref(),
            Some("arn:aws:iam::*:role/web-host")
        );
    }
}
