//! The arithmetic of a shift: from the current weights and what was asked
//! (`--to X --steps ...`, `--to X --weight P`, `--weights a=..,b=..`) to the
//! weights of every step. Pure functions, checked before any change is made.

use std::collections::BTreeMap;

use crate::outcome::{Code, ExitStatus};
use crate::state::Weights;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Give `member` each share in `steps` (percentages) in turn; the others
    /// split the rest in proportion to their current weights.
    To {
        /// The member receiving traffic.
        member: String,
        /// Percentages, ascending.
        steps: Vec<u8>,
    },
    /// Set these shares (percentages summing to 100) on every member.
    Exact(BTreeMap<String, u8>),
}

/// Input that cannot make a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no steps given")]
    NoSteps,
    #[error("step {0} is outside 0-100")]
    StepRange(u32),
    #[error("steps must be strictly ascending; {0} is not greater than {1}")]
    NotAscending(u8, u8),
    #[error("{member:?} is not a member of the group; members are {known}")]
    UnknownMember { member: String, known: String },
    #[error("the group has only one member ({0}); there is nothing to shift between")]
    OnlyMember(String),
    #[error("weights must sum to 100; these sum to {0}")]
    Sum(u32),
    #[error("weights must name every member of the group; missing: {0}")]
    Missing(String),
    #[error("{0:?} is named twice")]
    Duplicate(String),
    #[error("invalid weight {0:?}; expected NAME=PERCENT, e.g. us-east=50")]
    Syntax(String),
}

impl ExitStatus for PlanError {
    fn exit_code(&self) -> Code {
        Code::Usage
    }
}

/// Checks `--steps`: each 0-100, strictly ascending.
pub fn check_steps(steps: &[u32]) -> Result<Vec<u8>, PlanError> {
    if steps.is_empty() {
        return Err(PlanError::NoSteps);
    }
    let mut out: Vec<u8> = Vec::with_capacity(steps.len());
    for &s in steps {
        let pct = u8::try_from(s)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or(PlanError::StepRange(s))?;
        if let Some(&prev) = out.last() {
            if pct <= prev {
                return Err(PlanError::NotAscending(pct, prev));
            }
        }
        out.push(pct);
    }
    Ok(out)
}

/// Parses `--weights a=50,b=30,c=20`: percentages summing to 100, no name twice.
pub fn parse_weights(pairs: &[String]) -> Result<BTreeMap<String, u8>, PlanError> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let (name, pct) = pair
            .split_once('=')
            .ok_or_else(|| PlanError::Syntax(pair.clone()))?;
        let name = name.trim();
        let pct: u32 = pct
            .trim()
            .parse()
            .map_err(|_| PlanError::Syntax(pair.clone()))?;
        if name.is_empty() {
            return Err(PlanError::Syntax(pair.clone()));
        }
        let pct = u8::try_from(pct)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or(PlanError::StepRange(pct))?;
        if out.insert(name.to_owned(), pct).is_some() {
            return Err(PlanError::Duplicate(name.to_owned()));
        }
    }
    let sum: u32 = out.values().map(|&p| u32::from(p)).sum();
    if sum != 100 {
        return Err(PlanError::Sum(sum));
    }
    Ok(out)
}

/// The share (0-100) a member has of the group's traffic. When every weight is
/// zero, Route53 answers all members equally, and so does this.
pub fn share(weights: &Weights, member: &str) -> f64 {
    let total: u64 = weights.values().map(|&w| u64::from(w)).sum();
    let Some(&w) = weights.get(member) else {
        return 0.0;
    };
    if total == 0 {
        #[allow(clippy::cast_precision_loss)]
        return 100.0 / weights.len() as f64;
    }
    #[allow(clippy::cast_precision_loss)]
    {
        f64::from(w) * 100.0 / total as f64
    }
}

/// The weights of every step, each covering every member and summing to 100.
///
/// With `--steps`, steps below the member's current share are skipped (a
/// resumed shift never moves backwards); if that leaves none, the last step is kept.
pub fn plan(current: &Weights, intent: &Intent) -> Result<Vec<Weights>, PlanError> {
    let known = || current.keys().cloned().collect::<Vec<_>>().join(", ");
    match intent {
        Intent::To { member, steps } => {
            if !current.contains_key(member) {
                return Err(PlanError::UnknownMember {
                    member: member.clone(),
                    known: known(),
                });
            }
            if current.len() < 2 {
                return Err(PlanError::OnlyMember(member.clone()));
            }
            let now = share(current, member);
            let mut todo: Vec<u8> = steps.clone();
            if todo.len() > 1 {
                todo.retain(|&s| f64::from(s) + 1e-9 >= now.floor());
                if todo.is_empty() {
                    todo.extend(steps.last());
                }
            }
            Ok(todo
                .iter()
                .map(|&pct| split(current, member, pct))
                .collect())
        }
        Intent::Exact(shares) => {
            for name in shares.keys() {
                if !current.contains_key(name) {
                    return Err(PlanError::UnknownMember {
                        member: name.clone(),
                        known: known(),
                    });
                }
            }
            let missing: Vec<_> = current
                .keys()
                .filter(|k| !shares.contains_key(*k))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(PlanError::Missing(missing.join(", ")));
            }
            Ok(vec![shares
                .iter()
                .map(|(k, &v)| (k.clone(), u32::from(v)))
                .collect()])
        }
    }
}

/// `member` gets `pct`; the others split `100 - pct` in proportion to their
/// current weights (equally when they are all zero), rounded by largest
/// remainder so that the total is exactly 100.
fn split(current: &Weights, member: &str, pct: u8) -> Weights {
    let rest = 100 - u64::from(pct);
    let others: Vec<(&String, u64)> = current
        .iter()
        .filter(|(k, _)| k.as_str() != member)
        .map(|(k, &w)| (k, u64::from(w)))
        .collect();
    let total: u64 = others.iter().map(|(_, w)| w).sum();
    let basis: Vec<u64> = if total == 0 {
        vec![1; others.len()]
    } else {
        others.iter().map(|(_, w)| *w).collect()
    };
    let basis_total: u64 = basis.iter().sum();
    let mut parts: Vec<(usize, u64, u64)> = basis
        .iter()
        .enumerate()
        .map(|(i, b)| (i, rest * b / basis_total, rest * b % basis_total))
        .collect();
    let mut left = rest - parts.iter().map(|p| p.1).sum::<u64>();
    // Largest remainder first; ties go to the earlier member (stable sort).
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|&a, &b| parts[b].2.cmp(&parts[a].2));
    for i in order {
        if left == 0 {
            break;
        }
        parts[i].1 += 1;
        left -= 1;
    }
    let mut out = Weights::new();
    out.insert(member.to_owned(), u32::from(pct));
    for (i, amount, _) in parts {
        out.insert(
            others[i].0.clone(),
            u32::try_from(amount).unwrap_or(u32::MAX),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(pairs: &[(&str, u32)]) -> Weights {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    fn to(member: &str, steps: &[u8]) -> Intent {
        Intent::To {
            member: member.into(),
            steps: steps.to_vec(),
        }
    }

    #[test]
    fn blue_green_steps() {
        let plan = plan(
            &w(&[("blue", 100), ("green", 0)]),
            &to("green", &[10, 50, 100]),
        )
        .unwrap();
        assert_eq!(
            plan,
            vec![
                w(&[("blue", 90), ("green", 10)]),
                w(&[("blue", 50), ("green", 50)]),
                w(&[("blue", 0), ("green", 100)]),
            ]
        );
    }

    #[test]
    fn others_split_the_rest_in_proportion() {
        let plan = plan(
            &w(&[("canary", 0), ("east", 200), ("west", 100)]),
            &to("canary", &[10]),
        )
        .unwrap();
        assert_eq!(plan, vec![w(&[("canary", 10), ("east", 60), ("west", 30)])]);
        // 100 - 25 = 75 split 1:1:1 exactly; 100 - 20 = 80 split 1:1:1 → 27,27,26.
        let plan = plan_one(&w(&[("a", 0), ("b", 5), ("c", 5), ("d", 5)]), "a", 20);
        assert_eq!(plan.values().sum::<u32>(), 100);
        assert_eq!(plan, w(&[("a", 20), ("b", 27), ("c", 27), ("d", 26)]));
    }

    fn plan_one(current: &Weights, member: &str, pct: u8) -> Weights {
        plan(current, &to(member, &[pct])).unwrap().remove(0)
    }

    #[test]
    fn all_zero_others_share_equally() {
        assert_eq!(
            plan_one(&w(&[("a", 0), ("b", 0), ("c", 0)]), "a", 50),
            w(&[("a", 50), ("b", 25), ("c", 25)])
        );
    }

    #[test]
    fn resumed_steps_never_move_backwards() {
        let plan = plan(
            &w(&[("blue", 50), ("green", 50)]),
            &to("green", &[10, 50, 100]),
        )
        .unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0]["green"], 50);
        // A single --weight is taken as asked, also downwards.
        assert_eq!(
            plan_one(&w(&[("blue", 50), ("green", 50)]), "green", 10)["green"],
            10
        );
    }

    #[test]
    fn bad_steps_are_refused() {
        assert_eq!(check_steps(&[]), Err(PlanError::NoSteps));
        assert_eq!(check_steps(&[10, 150]), Err(PlanError::StepRange(150)));
        assert_eq!(check_steps(&[50, 10]), Err(PlanError::NotAscending(10, 50)));
        assert_eq!(check_steps(&[10, 10]), Err(PlanError::NotAscending(10, 10)));
        assert_eq!(check_steps(&[0, 10, 100]), Ok(vec![0, 10, 100]));
    }

    #[test]
    fn explicit_weights() {
        let shares =
            parse_weights(&["us-east=50".into(), "us-west=30".into(), "do=20".into()]).unwrap();
        let current = w(&[("do", 0), ("us-east", 100), ("us-west", 0)]);
        assert_eq!(
            plan(&current, &Intent::Exact(shares)).unwrap(),
            vec![w(&[("do", 20), ("us-east", 50), ("us-west", 30)])]
        );
        assert_eq!(
            parse_weights(&["a=50".into(), "b=40".into()]),
            Err(PlanError::Sum(90))
        );
        assert_eq!(
            parse_weights(&["a=50".into(), "a=50".into()]),
            Err(PlanError::Duplicate("a".into()))
        );
        assert!(matches!(
            parse_weights(&["a50".into()]),
            Err(PlanError::Syntax(_))
        ));
        let missing = parse_weights(&["us-east=100".into()]).unwrap();
        assert_eq!(
            plan(&current, &Intent::Exact(missing)),
            Err(PlanError::Missing("do, us-west".into()))
        );
    }

    #[test]
    fn unknown_member_names_the_known_ones() {
        let err = plan(&w(&[("blue", 1), ("green", 1)]), &to("red", &[10])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"red\" is not a member of the group; members are blue, green"
        );
    }

    #[test]
    fn shares() {
        assert!((share(&w(&[("a", 1), ("b", 3)]), "b") - 75.0).abs() < 1e-9);
        assert!((share(&w(&[("a", 0), ("b", 0)]), "b") - 50.0).abs() < 1e-9);
    }
}
