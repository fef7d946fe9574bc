//! The journal read as a release history: each traffic move (a shift or a
//! rollback) with who ran it, when, the weights it moved between, its gates,
//! the verdicts that preceded it and how it ended; and the current picture
//! (stacks and their roles, routes and their weights, last verdicts).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::{steps, Health, JournalEntry, Outcome, StateDocument, Weights};
use crate::outcome::StepReport;

/// One traffic move.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Release {
    /// 1-based, in journal order.
    pub number: usize,
    /// `shift` or `rollback`.
    pub kind: &'static str,
    /// The route it moved.
    pub route: String,
    /// The member that received traffic, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The version that member runs, as the state knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Who ran it.
    pub actor: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Weights before its first change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// Weights after its last verified change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
    /// Changes verified.
    pub steps: usize,
    /// Gates passed.
    pub gates_passed: usize,
    /// Gates failed.
    pub gates_failed: usize,
    /// Health verdicts journaled since the previous move (`stack: summary`).
    pub verdicts: Vec<String>,
    /// `completed`, `rolled back`, `rollback`, `failed`, `interrupted`, `refused` or `in progress`.
    pub outcome: &'static str,
    /// Why it did not complete (the failed gate or metric analysis), when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// A stack as it is now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackNow {
    /// Its name.
    pub name: String,
    /// Its role, if known.
    pub role: Option<String>,
    /// Its version, if known.
    pub version: Option<String>,
    /// Its last verdict.
    pub verdict: Option<String>,
}

/// A route as it is now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteNow {
    /// Its id.
    pub route: String,
    /// Its weights as last read back.
    pub weights: Weights,
    /// The status of its last shift.
    pub status: Option<String>,
}

/// The history and the current picture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    /// The service, if the state names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Image per region.
    pub images: std::collections::BTreeMap<String, String>,
    /// Every traffic move, oldest first.
    pub releases: Vec<Release>,
    /// Stacks now.
    pub stacks: Vec<StackNow>,
    /// Routes now.
    pub routes: Vec<RouteNow>,
}

fn extra_str(e: &JournalEntry, key: &str) -> Option<String> {
    e.extra.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn word(h: Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
        Health::Inconclusive => "inconclusive",
    }
}

/// Adds a journal entry to an open move; true when it ends the move.
fn record(r: &mut Release, action: &str, e: &JournalEntry) -> bool {
    let ended = match action {
        // The rollback after a failed gate is the move's undoing, not its destination.
        "weights-submitted" if e.detail.as_deref() == Some("rollback") => None,
        "weights-submitted" => {
            if let Some(c) = e.changes.first() {
                if r.from.is_none() {
                    r.from.clone_from(&c.before);
                }
                r.to.clone_from(&c.after);
            }
            None
        }
        "weights-verified" => {
            r.steps += 1;
            None
        }
        "gate" if e.outcome == Outcome::Ok => {
            r.gates_passed += 1;
            None
        }
        "gate" => {
            r.gates_failed += 1;
            (r.steps == 0).then_some("refused")
        }
        "shift-completed" => Some("completed"),
        "rollback-completed" if r.kind == "rollback" => Some("rollback"),
        "rollback-completed" => Some("rolled back"),
        "shift-stopped" | "rollback-failed" if e.outcome == Outcome::Interrupted => {
            Some("interrupted")
        }
        "shift-stopped" | "rollback-failed" => Some("failed"),
        _ => None,
    };
    if let Some(outcome) = ended {
        r.outcome = outcome;
        r.ended_at = Some(e.at);
        if !matches!(outcome, "completed" | "rollback") {
            r.why.clone_from(&e.detail);
        }
    }
    ended.is_some()
}

/// Reads the history out of a state document.
pub fn history(doc: &StateDocument) -> History {
    let mut releases: Vec<Release> = Vec::new();
    let mut verdicts: Vec<String> = Vec::new();
    let mut open: Option<usize> = None;
    for e in &doc.journal {
        match (e.step.as_str(), e.action.as_str()) {
            (steps::VERIFY_HEALTH, "verdict") => {
                verdicts.push(e.detail.clone().unwrap_or_default());
            }
            (_, "shift-started" | "rollback-started") => {
                let target = extra_str(e, "target");
                releases.push(Release {
                    number: releases.len() + 1,
                    kind: if e.action == "rollback-started" {
                        "rollback"
                    } else {
                        "shift"
                    },
                    route: extra_str(e, "route").unwrap_or_else(|| {
                        e.detail
                            .as_deref()
                            .and_then(|d| d.split(": ").next())
                            .unwrap_or("")
                            .to_owned()
                    }),
                    version: target
                        .as_ref()
                        .and_then(|t| doc.stacks.get(t))
                        .and_then(|s| s.version.clone()),
                    target,
                    actor: e.actor.clone(),
                    started_at: e.at,
                    ended_at: None,
                    from: None,
                    to: None,
                    steps: 0,
                    gates_passed: 0,
                    gates_failed: 0,
                    verdicts: std::mem::take(&mut verdicts),
                    outcome: "in progress",
                    why: None,
                });
                open = Some(releases.len() - 1);
            }
            (_, action) => {
                if let Some(i) = open {
                    if record(&mut releases[i], action, e) {
                        open = None;
                    }
                }
            }
        }
    }
    let stacks = doc
        .stacks
        .iter()
        .map(|(name, s)| StackNow {
            name: name.clone(),
            role: s.role.map(|r| format!("{r:?}").to_lowercase()),
            version: s.version.clone(),
            verdict: doc
                .health
                .get(name)
                .map(|v| format!("{} at {}", word(v.status), v.at.format("%Y-%m-%d %H:%M:%S"))),
        })
        .collect();
    let routes = doc
        .traffic
        .iter()
        .map(|(id, r)| RouteNow {
            route: id.clone(),
            weights: r.weights.clone(),
            status: r
                .shift
                .as_ref()
                .map(|s| format!("{:?}", s.status).to_lowercase()),
        })
        .collect();
    History {
        service: doc.deployment.as_ref().and_then(|d| d.service.clone()),
        images: doc
            .image
            .as_ref()
            .map(|i| i.amis.clone())
            .unwrap_or_default(),
        releases,
        stacks,
        routes,
    }
}

fn weights_text(v: Option<&Value>) -> String {
    v.and_then(Value::as_object).map_or_else(
        || "-".to_owned(),
        |o| {
            o.iter()
                .map(|(k, w)| format!("{k}={w}"))
                .collect::<Vec<_>>()
                .join(",")
        },
    )
}

impl StepReport for History {
    fn text(&self) -> String {
        self.table()
    }

    fn outputs(&self) -> Vec<(String, String)> {
        vec![("releases".to_owned(), self.releases.len().to_string())]
    }

    fn summary(&self) -> String {
        format!("### switchyard history\n\n```\n{}```\n", self.table())
    }
}

impl History {
    /// The history as text tables.
    pub fn table(&self) -> String {
        let mut t = String::new();
        if let Some(s) = &self.service {
            let _ = writeln!(t, "service {s}");
        }
        for (region, ami) in &self.images {
            let _ = writeln!(t, "image {region}: {ami}");
        }
        let _ = writeln!(
            t,
            "{:<3} {:<19} {:<8} {:<8} {:<8} {:<27} {:<27} {:>5} {:>5}  {:<12} by",
            "#",
            "started (UTC)",
            "kind",
            "target",
            "version",
            "from",
            "to",
            "steps",
            "gates",
            "outcome",
        );
        for r in &self.releases {
            let gates = if r.gates_failed > 0 {
                format!("{}/{}", r.gates_passed, r.gates_passed + r.gates_failed)
            } else {
                r.gates_passed.to_string()
            };
            let _ = writeln!(
                t,
                "{:<3} {:<19} {:<8} {:<8} {:<8} {:<27} {:<27} {:>5} {:>5}  {:<12} {}",
                r.number,
                r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.kind,
                r.target.as_deref().unwrap_or("-"),
                r.version.as_deref().unwrap_or("-"),
                weights_text(r.from.as_ref()),
                weights_text(r.to.as_ref()),
                r.steps,
                gates,
                r.outcome,
                r.actor
            );
            if let Some(why) = &r.why {
                let _ = writeln!(t, "    why: {why}");
            }
        }
        if self.releases.is_empty() {
            t.push_str("(no traffic moves in the journal)\n");
        }
        t.push_str("\nnow:\n");
        for s in &self.stacks {
            let _ = writeln!(
                t,
                "  stack {:<10} {:<8} version {:<8} last verdict {}",
                s.name,
                s.role.as_deref().unwrap_or("-"),
                s.version.as_deref().unwrap_or("-"),
                s.verdict.as_deref().unwrap_or("none")
            );
        }
        for r in &self.routes {
            let weights: Vec<String> = r.weights.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                t,
                "  route {} {} ({})",
                r.route,
                weights.join(","),
                r.status.as_deref().unwrap_or("no shift")
            );
        }
        t
    }
}
