//! The flags that name a route: which router splits the traffic, and where
//! its weights and its deployment lease live. shift-weight and
//! `switchyard lock` share them, with the checks that run before any call.

use std::path::PathBuf;

use aws_sdk_route53::types::RrType;
use clap::{Args, ValueEnum};

use super::Failure;
use crate::aws::iam;
use crate::traffic::alb::Target;
use crate::traffic::haproxy::{Endpoint, HaproxyRouter};

/// The routers a route can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RouterKind {
    /// Route53 weighted record sets
    Route53,
    /// An ALB listener's (or rule's) forward action with weighted target groups
    Alb,
    /// An HAProxy backend's servers, through the runtime API
    Haproxy,
}

impl RouterKind {
    /// The name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Route53 => "route53",
            Self::Alb => "alb",
            Self::Haproxy => "haproxy",
        }
    }
}

/// The route's flags, as given.
#[derive(Debug, Clone, Args)]
pub struct RouteArgs {
    /// The router that splits the traffic
    #[arg(long, env = "SWITCHYARD_ROUTER", value_enum, default_value_t = RouterKind::Route53)]
    pub router: RouterKind,

    /// Route53 hosted zone id of the record group (--router route53)
    #[arg(long, env = "SWITCHYARD_ZONE_ID", value_name = "ID")]
    pub zone_id: Option<String>,

    /// Name of the weighted record group, e.g. app.example.com (--router route53)
    #[arg(long, env = "SWITCHYARD_RECORD_NAME", value_name = "NAME")]
    pub record_name: Option<String>,

    /// Record type of the group (--router route53)
    #[arg(
        long,
        env = "SWITCHYARD_RECORD_TYPE",
        default_value = "A",
        value_name = "TYPE"
    )]
    pub record_type: String,

    /// ALB listener whose default forward action splits the traffic (--router alb)
    #[arg(
        long,
        env = "SWITCHYARD_LISTENER_ARN",
        value_name = "ARN",
        conflicts_with = "rule_arn"
    )]
    pub listener_arn: Option<String>,

    /// ALB listener rule whose forward action splits the traffic (--router alb)
    #[arg(long, env = "SWITCHYARD_RULE_ARN", value_name = "ARN")]
    pub rule_arn: Option<String>,

    /// HAProxy runtime API (`stats socket ... level admin`): a unix socket path or tcp:HOST:PORT
    /// (--router haproxy)
    #[arg(
        long,
        env = "SWITCHYARD_HAPROXY_SOCKET",
        value_name = "PATH|tcp:HOST:PORT"
    )]
    pub haproxy_socket: Option<String>,

    /// HAProxy backend holding the stacks' servers (--router haproxy)
    #[arg(long, env = "SWITCHYARD_BACKEND", value_name = "NAME")]
    pub backend: Option<String>,

    /// File to save `show servers state` to after every change, the one HAProxy's
    /// `server-state-file` names, so that a reload keeps the weights (--router haproxy)
    #[arg(long, env = "SWITCHYARD_SERVER_STATE_FILE", value_name = "PATH")]
    pub server_state_file: Option<PathBuf>,

    /// Lock file of the HAProxy deployment lease [default: beside --server-state-file, else
    /// beside the unix socket]
    #[arg(long, env = "SWITCHYARD_LOCK_FILE", value_name = "PATH")]
    pub lock_file: Option<PathBuf>,
}

/// A route named by checked flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A weighted record group.
    Route53 {
        zone_id: String,
        name: String,
        rtype: RrType,
    },
    /// A listener's or a rule's forward action.
    Alb { target: Target },
    /// An HAProxy backend.
    Haproxy {
        endpoint: Endpoint,
        backend: String,
        server_state_file: Option<PathBuf>,
        lock_file: PathBuf,
    },
}

impl RouteArgs {
    /// Checks the flags of the chosen router, and that no other router's
    /// flags are given.
    pub fn route(&self) -> Result<Route, Failure> {
        let route53 = [
            ("--zone-id", self.zone_id.is_some()),
            ("--record-name", self.record_name.is_some()),
        ];
        let alb = [
            ("--listener-arn", self.listener_arn.is_some()),
            ("--rule-arn", self.rule_arn.is_some()),
        ];
        let haproxy = [
            ("--haproxy-socket", self.haproxy_socket.is_some()),
            ("--backend", self.backend.is_some()),
            ("--server-state-file", self.server_state_file.is_some()),
            ("--lock-file", self.lock_file.is_some()),
        ];
        for (router, flags) in [
            (RouterKind::Route53, &route53[..]),
            (RouterKind::Alb, &alb[..]),
            (RouterKind::Haproxy, &haproxy[..]),
        ] {
            for (flag, set) in flags {
                self.only_for(flag, *set, &[router])?;
            }
        }
        match self.router {
            RouterKind::Route53 => self.route53(),
            RouterKind::Alb => self.alb(),
            RouterKind::Haproxy => self.haproxy(),
        }
    }

    /// Refuses `flag` (given when `set`) unless the router is one of `routers`.
    pub fn only_for(&self, flag: &str, set: bool, routers: &[RouterKind]) -> Result<(), Failure> {
        if !set || routers.contains(&self.router) {
            return Ok(());
        }
        let names: Vec<String> = routers
            .iter()
            .map(|r| format!("--router {}", r.name()))
            .collect();
        Err(Failure::usage(format!(
            "{flag} is for {}, not --router {}",
            names.join(" or "),
            self.router.name()
        )))
    }

    fn route53(&self) -> Result<Route, Failure> {
        let (Some(zone_id), Some(name)) = (
            nonempty(self.zone_id.as_deref()),
            nonempty(self.record_name.as_deref()),
        ) else {
            return Err(Failure::usage(
                "--router route53 needs --zone-id and --record-name (not empty)",
            ));
        };
        let rtype =
            crate::aws::route53::parse_record_type(&self.record_type).map_err(Failure::usage)?;
        Ok(Route::Route53 {
            zone_id,
            name,
            rtype,
        })
    }

    fn alb(&self) -> Result<Route, Failure> {
        let target = match (
            nonempty(self.listener_arn.as_deref()),
            nonempty(self.rule_arn.as_deref()),
        ) {
            (Some(arn), None) if arn.contains(":listener/") => Target::Listener(arn),
            (None, Some(arn)) if arn.contains(":listener-rule/") => Target::Rule(arn),
            (Some(arn), None) => {
                return Err(Failure::usage(format!(
                "--listener-arn {arn:?} is not a listener ARN (arn:aws:elasticloadbalancing:...:listener/...)"
            )))
            }
            (None, Some(arn)) => {
                return Err(Failure::usage(format!(
                "--rule-arn {arn:?} is not a listener rule ARN (arn:aws:elasticloadbalancing:...:listener-rule/...)"
            )))
            }
            _ => {
                return Err(Failure::usage(
                    "--router alb needs --listener-arn or --rule-arn",
                ))
            }
        };
        Ok(Route::Alb { target })
    }

    fn haproxy(&self) -> Result<Route, Failure> {
        let (Some(socket), Some(backend)) = (
            nonempty(self.haproxy_socket.as_deref()),
            nonempty(self.backend.as_deref()),
        ) else {
            return Err(Failure::usage(
                "--router haproxy needs --haproxy-socket and --backend",
            ));
        };
        let endpoint = Endpoint::parse(&socket).map_err(Failure::usage)?;
        let lock_file = match &self.lock_file {
            Some(f) => f.clone(),
            None => HaproxyRouter::default_lock_file(&endpoint, self.server_state_file.as_deref())
                .ok_or_else(|| {
                    Failure::usage(
                        "with a TCP --haproxy-socket, give --server-state-file or --lock-file: the lease's lock file lives beside it",
                    )
                })?,
        };
        Ok(Route::Haproxy {
            endpoint,
            backend,
            server_state_file: self.server_state_file.clone(),
            lock_file,
        })
    }
}

impl Route {
    /// The IAM policy of reading the route's lease, and with `release` of
    /// removing it. An HAProxy lease is a local file: no AWS permission.
    pub fn lease_policy(&self, release: bool) -> iam::Policy {
        match self {
            Self::Route53 { zone_id, .. } => crate::traffic::route53::policy(zone_id, release),
            Self::Alb { target } => {
                let mut policy = iam::Policy::new();
                if release {
                    policy.allow(
                        "ReleaseLease",
                        &["elasticloadbalancing:RemoveTags"],
                        [target.arn().to_owned()],
                    );
                }
                // DescribeTags has no resource level.
                policy.allow("ReadLease", &["elasticloadbalancing:DescribeTags"], ["*"]);
                policy
            }
            Self::Haproxy { .. } => iam::Policy::new(),
        }
    }
}

/// A flag's value when it is given and not blank.
pub fn nonempty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        route: RouteArgs,
    }

    fn route(args: &[&str]) -> Result<Route, String> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| e.kind().to_string())?;
        cli.route
            .route()
            .map_err(|f| format!("{}: {}", f.code.number(), f.error))
    }

    const LISTENER: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/lb/1/2";

    #[test]
    fn each_router_takes_its_own_flags_only() {
        assert_eq!(
            route(&[]).unwrap_err(),
            "2: --router route53 needs --zone-id and --record-name (not empty)"
        );
        assert_eq!(
            route(&[
                "--zone-id",
                "Z1",
                "--record-name",
                "a.example.com",
                "--backend",
                "b"
            ])
            .unwrap_err(),
            "2: --backend is for --router haproxy, not --router route53"
        );
        assert_eq!(
            route(&[
                "--zone-id",
                "Z1",
                "--record-name",
                "a",
                "--record-type",
                "BOGUS"
            ])
            .unwrap_err()
            .get(..2),
            Some("2:")
        );
        assert_eq!(
            route(&[
                "--router",
                "alb",
                "--listener-arn",
                LISTENER,
                "--zone-id",
                "Z1"
            ])
            .unwrap_err(),
            "2: --zone-id is for --router route53, not --router alb"
        );
        assert_eq!(
            route(&["--router", "alb", "--rule-arn", LISTENER]).unwrap_err(),
            format!("2: --rule-arn {LISTENER:?} is not a listener rule ARN (arn:aws:elasticloadbalancing:...:listener-rule/...)")
        );
        assert_eq!(
            route(&["--router", "alb", "--listener-arn", LISTENER]).unwrap(),
            Route::Alb {
                target: Target::Listener(LISTENER.to_owned())
            }
        );
        assert_eq!(
            route(&["--router", "haproxy", "--backend", "app"]).unwrap_err(),
            "2: --router haproxy needs --haproxy-socket and --backend"
        );
        let Ok(Route::Haproxy { lock_file, .. }) = route(&[
            "--router",
            "haproxy",
            "--backend",
            "app",
            "--haproxy-socket",
            "/run/h.sock",
            "--server-state-file",
            "/var/lib/haproxy/state",
        ]) else {
            panic!("haproxy route")
        };
        assert_eq!(
            lock_file,
            PathBuf::from("/var/lib/haproxy/state.switchyard-lock")
        );
    }

    #[test]
    fn a_flag_of_several_routers_names_them_all() {
        let cli = Cli::try_parse_from(["t", "--zone-id", "Z", "--record-name", "n"]).unwrap();
        let refused = cli
            .route
            .only_for("--member", true, &[RouterKind::Alb, RouterKind::Haproxy])
            .unwrap_err();
        assert_eq!(
            refused.error.to_string(),
            "--member is for --router alb or --router haproxy, not --router route53"
        );
        assert!(cli
            .route
            .only_for("--member", false, &[RouterKind::Alb])
            .is_ok());
    }

    #[test]
    fn the_lease_policy_follows_the_router() {
        let alb = Route::Alb {
            target: Target::Listener(LISTENER.to_owned()),
        };
        assert!(alb
            .lease_policy(false)
            .allows("elasticloadbalancing:DescribeTags"));
        assert!(!alb
            .lease_policy(false)
            .allows("elasticloadbalancing:RemoveTags"));
        assert!(alb
            .lease_policy(true)
            .allows("elasticloadbalancing:RemoveTags"));
        let r53 = Route::Route53 {
            zone_id: "Z1".into(),
            name: "a".into(),
            rtype: RrType::A,
        };
        assert!(r53
            .lease_policy(true)
            .allows("route53:ChangeResourceRecordSets"));
        assert!(!r53
            .lease_policy(false)
            .allows("route53:ChangeResourceRecordSets"));
    }
}
