//! The route flags (`crate::cli::route::RouteArgs`) checked into a
//! [`Route`], for shift-weight and `switchyard lock`: the chosen router's
//! flags must be there, and no other router's flags may be given.

use crate::cli::route::{RouteArgs, RouterKind};
use crate::outcome::Failure;
use crate::traffic::alb::Target;
use crate::traffic::haproxy::{Endpoint, HaproxyRouter};
use crate::traffic::Route;

/// Checks the flags of the chosen router, and that no other router's flags are given.
pub fn route(args: &RouteArgs) -> Result<Route, Failure> {
    let route53 = [
        ("--zone-id", args.zone_id.is_some()),
        ("--record-name", args.record_name.is_some()),
    ];
    let alb = [
        ("--listener-arn", args.listener_arn.is_some()),
        ("--rule-arn", args.rule_arn.is_some()),
    ];
    let haproxy = [
        ("--haproxy-socket", args.haproxy_socket.is_some()),
        ("--backend", args.backend.is_some()),
        ("--server-state-file", args.server_state_file.is_some()),
        ("--lock-file", args.lock_file.is_some()),
    ];
    for (router, flags) in [
        (RouterKind::Route53, &route53[..]),
        (RouterKind::Alb, &alb[..]),
        (RouterKind::Haproxy, &haproxy[..]),
    ] {
        for (flag, set) in flags {
            only_for(args, flag, *set, &[router])?;
        }
    }
    match args.router {
        RouterKind::Route53 => route53_route(args),
        RouterKind::Alb => alb_route(args),
        RouterKind::Haproxy => haproxy_route(args),
    }
}

/// Refuses `flag` (given when `set`) unless the router is one of `routers`.
pub fn only_for(
    args: &RouteArgs,
    flag: &str,
    set: bool,
    routers: &[RouterKind],
) -> Result<(), Failure> {
    if !set || routers.contains(&args.router) {
        return Ok(());
    }
    let names: Vec<String> = routers
        .iter()
        .map(|r| format!("--router {}", r.name()))
        .collect();
    Err(Failure::usage(format!(
        "{flag} is for {}, not --router {}",
        names.join(" or "),
        args.router.name()
    )))
}

fn route53_route(args: &RouteArgs) -> Result<Route, Failure> {
    let (Some(zone_id), Some(name)) = (
        nonempty(args.zone_id.as_deref()),
        nonempty(args.record_name.as_deref()),
    ) else {
        return Err(Failure::usage(
            "--router route53 needs --zone-id and --record-name (not empty)",
        ));
    };
    let rtype =
        crate::aws::route53::parse_record_type(&args.record_type).map_err(Failure::usage)?;
    Ok(Route::Route53 {
        zone_id,
        name,
        rtype,
    })
}

fn alb_route(args: &RouteArgs) -> Result<Route, Failure> {
    let target = match (
        nonempty(args.listener_arn.as_deref()),
        nonempty(args.rule_arn.as_deref()),
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

fn haproxy_route(args: &RouteArgs) -> Result<Route, Failure> {
    let (Some(socket), Some(backend)) = (
        nonempty(args.haproxy_socket.as_deref()),
        nonempty(args.backend.as_deref()),
    ) else {
        return Err(Failure::usage(
            "--router haproxy needs --haproxy-socket and --backend",
        ));
    };
    let endpoint = Endpoint::parse(&socket).map_err(Failure::usage)?;
    let lock_file = match &args.lock_file {
        Some(f) => f.clone(),
        None => HaproxyRouter::default_lock_file(&endpoint, args.server_state_file.as_deref())
            .ok_or_else(|| {
                Failure::usage(
                    "with a TCP --haproxy-socket, give --server-state-file or --lock-file: the lease's lock file lives beside it",
                )
            })?,
    };
    Ok(Route::Haproxy {
        endpoint,
        backend,
        server_state_file: args.server_state_file.clone(),
        lock_file,
    })
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
    use std::path::PathBuf;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        route: RouteArgs,
    }

    fn checked(args: &[&str]) -> Result<Route, String> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| e.kind().to_string())?;
        route(&cli.route).map_err(|f| format!("{}: {}", f.code.number(), f.error))
    }

    const LISTENER: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/lb/1/2";

    #[test]
    fn each_router_takes_its_own_flags_only() {
        assert_eq!(
            checked(&[]).unwrap_err(),
            "2: --router route53 needs --zone-id and --record-name (not empty)"
        );
        assert_eq!(
            checked(&[
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
            checked(&[
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
            checked(&[
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
            checked(&["--router", "alb", "--rule-arn", LISTENER]).unwrap_err(),
            format!("2: --rule-arn {LISTENER:?} is not a listener rule ARN (arn:aws:elasticloadbalancing:...:listener-rule/...)")
        );
        assert_eq!(
            checked(&["--router", "alb", "--listener-arn", LISTENER]).unwrap(),
            Route::Alb {
                target: Target::Listener(LISTENER.to_owned())
            }
        );
        assert_eq!(
            checked(&["--router", "haproxy", "--backend", "app"]).unwrap_err(),
            "2: --router haproxy needs --haproxy-socket and --backend"
        );
        let Ok(Route::Haproxy { lock_file, .. }) = checked(&[
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
        let refused = only_for(
            &cli.route,
            "--member",
            true,
            &[RouterKind::Alb, RouterKind::Haproxy],
        )
        .unwrap_err();
        assert_eq!(
            refused.error.to_string(),
            "--member is for --router alb or --router haproxy, not --router route53"
        );
        assert!(only_for(&cli.route, "--member", false, &[RouterKind::Alb]).is_ok());
    }
}
