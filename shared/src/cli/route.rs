//! The flags that name a route: which router splits the traffic, and where
//! its weights and its deployment lease live. shift-weight and
//! `switchyard lock` share them; `crate::commands::route` checks them.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

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
