use std::path::PathBuf;

use clap::Parser;

use super::*;
use crate::traffic::alb::Target;

fn parse(extra: &[&str]) -> Result<(Request, ShiftOptions), String> {
    let mut command_line = vec![
        "shift-weight",
        "--zone-id",
        "Z1",
        "--record-name",
        "app.example.com",
    ];
    command_line.extend_from_slice(extra);
    let args = ShiftWeightArgs::try_parse_from(command_line).map_err(|e| e.kind().to_string())?;
    shift_settings(&args).map_err(|f| format!("{}: {}", f.code.number(), f.error))
}

#[test]
fn bad_input_is_refused_with_exit_2() {
    assert_eq!(
        parse(&["--to", "green"]).unwrap_err(),
        "2: --to needs --steps (e.g. 10,50,100) or --weight (e.g. 50)"
    );
    assert_eq!(
        parse(&["--to", "green", "--steps", "50,10"]).unwrap_err(),
        "2: steps must be strictly ascending; 10 is not greater than 50"
    );
    assert_eq!(
        parse(&["--to", "green", "--weight", "101"]).unwrap_err(),
        "2: step 101 is outside 0-100"
    );
    assert_eq!(
        parse(&["--weights", "a=50,b=40"]).unwrap_err(),
        "2: weights must sum to 100; these sum to 90"
    );
    assert_eq!(
        parse(&["--to", "g", "--weight", "5", "--gate-url", "ftp://x"]).unwrap_err(),
        "2: --gate-url \"ftp://x\" is not an http(s) URL"
    );
    assert!(parse(&["--to", "g", "--rollback"]).is_err());
    assert!(parse(&[]).is_err());
}

fn routed(extra: &[&str]) -> Result<(Route, RouteMembers), String> {
    let mut command_line = vec!["shift-weight", "--to", "green", "--weight", "10"];
    command_line.extend_from_slice(extra);
    let args = ShiftWeightArgs::try_parse_from(command_line).map_err(|e| e.kind().to_string())?;
    route_settings(&args).map_err(|f| format!("{}: {}", f.code.number(), f.error))
}

const LISTENER: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/lb/1/2";

#[test]
fn alb_takes_its_own_flags() {
    assert_eq!(
        routed(&["--router", "alb"]).unwrap_err(),
        "2: --router alb needs --listener-arn or --rule-arn"
    );
    assert_eq!(
        routed(&["--router", "alb", "--listener-arn", "arn:aws:x"]).unwrap_err(),
        "2: --listener-arn \"arn:aws:x\" is not a listener ARN (arn:aws:elasticloadbalancing:...:listener/...)"
    );
    assert_eq!(
        routed(&[
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
        routed(&[
            "--router",
            "alb",
            "--listener-arn",
            LISTENER,
            "--stickiness",
            "8d"
        ])
        .unwrap_err(),
        "2: --stickiness must be between 1s and 7d (ALB's 1-604800 seconds)"
    );
    assert_eq!(
        routed(&[
            "--router",
            "alb",
            "--listener-arn",
            LISTENER,
            "--member",
            "blue=a,b"
        ])
        .unwrap_err(),
        "2: --member blue: an ALB member is one target group (ARN or name)"
    );
    let (route, members) = routed(&[
        "--router",
        "alb",
        "--listener-arn",
        LISTENER,
        "--member",
        "blue=tg-blue;green=tg-green",
        "--stickiness",
        "1h",
    ])
    .unwrap();
    assert_eq!(
        route,
        Route::Alb {
            target: Target::Listener(LISTENER.into())
        }
    );
    assert_eq!(members.alb.len(), 2);
    assert_eq!(members.stickiness, Some(Duration::from_secs(3600)));
}

#[test]
fn haproxy_and_route53_take_their_own_flags() {
    assert_eq!(
        routed(&["--router", "haproxy", "--backend", "app"]).unwrap_err(),
        "2: --router haproxy needs --haproxy-socket and --backend"
    );
    assert!(routed(&[
        "--router",
        "haproxy",
        "--backend",
        "app",
        "--haproxy-socket",
        "tcp:127.0.0.1:9999"
    ])
    .unwrap_err()
    .contains("give --server-state-file or --lock-file"));
    assert_eq!(
        routed(&[
            "--router",
            "haproxy",
            "--backend",
            "app",
            "--haproxy-socket",
            "/s",
            "--member",
            "blue=b1",
            "--member",
            "blue=b2"
        ])
        .unwrap_err(),
        "2: --member blue is given twice"
    );
    assert!(routed(&[
        "--router",
        "haproxy",
        "--backend",
        "app",
        "--haproxy-socket",
        "/s",
        "--member",
        "blue"
    ])
    .unwrap_err()
    .starts_with("2: --member \"blue\": expected NAME=WHAT"));
    let (route, members) = routed(&[
        "--router",
        "haproxy",
        "--backend",
        "app",
        "--haproxy-socket",
        "/run/h.sock",
        "--member",
        "blue=b1,b2",
        "--server-state-file",
        "/var/lib/haproxy/state",
    ])
    .unwrap();
    assert_eq!(
        members.haproxy,
        Members::Explicit([("blue".to_owned(), vec!["b1".to_owned(), "b2".to_owned()])].into())
    );
    let Route::Haproxy { lock_file, .. } = route else {
        panic!("haproxy route")
    };
    assert_eq!(
        lock_file,
        PathBuf::from("/var/lib/haproxy/state.switchyard-lock")
    );

    assert_eq!(
        routed(&[]).unwrap_err(),
        "2: --router route53 needs --zone-id and --record-name (not empty)"
    );
    assert_eq!(
        routed(&[
            "--zone-id",
            "Z",
            "--record-name",
            "a.example.com",
            "--backend",
            "app"
        ])
        .unwrap_err(),
        "2: --backend is for --router haproxy, not --router route53"
    );
}

#[test]
fn good_input_makes_a_plan() {
    let (request, options) =
        parse(&["--to", "green", "--steps", "10,50,100", "--pause", "1m"]).unwrap();
    assert_eq!(
        request,
        Request::Shift(Intent::To {
            member: "green".into(),
            steps: vec![10, 50, 100]
        })
    );
    assert_eq!(options.pause, Duration::from_secs(60));
    assert!(options.gate.is_none());
    let (request, _) = parse(&["--rollback"]).unwrap();
    assert_eq!(request, Request::Rollback);
}
