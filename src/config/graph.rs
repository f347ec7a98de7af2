//! `after` across files: every name must be a loaded service, and the order must
//! have no cycles.
//!
//! A service whose `after` names a service that is not loaded — unknown, a task, in a
//! cycle, or itself broken — is not loaded either, with an error pointing at that
//! entry: starting it would start it against nothing, which is the half-alive state
//! paios exists to prevent. So every `after` in the returned config names a loaded
//! service, and the supervisor can rely on that.

use std::collections::{BTreeMap, BTreeSet};

use super::service::Parsed;
use super::{ConfigError, ServiceConfig};
use crate::names::closest;

fn after_error(p: &Parsed, index: usize, message: String, help: Option<String>) -> ConfigError {
    let (line, column) = p.after_at.get(index).copied().unwrap_or((1, 1));
    ConfigError {
        file: p.svc.file.clone(),
        line,
        column,
        key: format!("after[{index}]"),
        message,
        help,
    }
}

/// Checks every `after` against the other files and drops what cannot start.
/// `broken` holds the names of service files that had errors of their own.
pub(crate) fn resolve(
    mut parsed: BTreeMap<String, Parsed>,
    broken: &BTreeSet<String>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, ServiceConfig> {
    let all_names: Vec<&str> = parsed
        .keys()
        .map(String::as_str)
        .chain(broken.iter().map(String::as_str))
        .collect();
    let mut bad: BTreeSet<String> = BTreeSet::new();

    for (name, p) in &parsed {
        for (i, dep) in p.svc.after.iter().enumerate() {
            let problem = if dep == name {
                Some((
                    "a service cannot come after itself".to_string(),
                    Some("remove it from `after`".to_string()),
                ))
            } else if broken.contains(dep) {
                Some((
                    format!(
                        "`{dep}` is not loaded because its file has errors, so `{name}` is not started either"
                    ),
                    Some(format!("fix services.d/{dep}.toml")),
                ))
            } else if let Some(target) = parsed.get(dep) {
                target.svc.task.as_ref().map(|_| {
                    (
                        format!("`{dep}` is a task: a service can only come after services"),
                        Some("remove it from `after`".to_string()),
                    )
                })
            } else {
                let help = closest(dep, all_names.iter().copied())
                    .map(|c| format!("did you mean `{c}`?"))
                    .or_else(|| Some(format!("there is no services.d/{dep}.toml")));
                Some((format!("unknown service `{dep}`"), help))
            };
            if let Some((message, help)) = problem {
                errors.push(after_error(p, i, message, help));
                bad.insert(name.clone());
            }
        }
    }

    for (members, cycle) in cycles(&parsed, &bad) {
        let path = cycle
            .iter()
            .chain(cycle.first())
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" -> ");
        for name in &members {
            if let Some(p) = parsed.get(name) {
                // Point at the entry that closes the loop: the next member of the cycle,
                // or for a member off that cycle, its first entry inside the group.
                let next = cycle
                    .iter()
                    .position(|c| c == name)
                    .map(|k| &cycle[(k + 1) % cycle.len()]);
                let index = p
                    .svc
                    .after
                    .iter()
                    .position(|d| Some(d) == next)
                    .or_else(|| p.svc.after.iter().position(|d| members.contains(d)))
                    .unwrap_or(0);
                errors.push(after_error(
                    p,
                    index,
                    format!("`after` forms a cycle: {path}"),
                    Some("one of these services must not wait for the other".to_string()),
                ));
            }
            bad.insert(name.clone());
        }
    }

    // Whatever waits for a service that will not start does not start either.
    loop {
        let mut newly_bad = Vec::new();
        for (name, p) in &parsed {
            if bad.contains(name) {
                continue;
            }
            if let Some((i, dep)) = p
                .svc
                .after
                .iter()
                .enumerate()
                .find(|(_, d)| bad.contains(*d))
            {
                errors.push(after_error(
                    p,
                    i,
                    format!(
                        "`{dep}` is not loaded (see its errors), so `{name}` is not started either"
                    ),
                    None,
                ));
                newly_bad.push(name.clone());
            }
        }
        if newly_bad.is_empty() {
            break;
        }
        bad.extend(newly_bad);
    }

    parsed.retain(|name, _| !bad.contains(name));
    parsed.into_iter().map(|(name, p)| (name, p.svc)).collect()
}

/// Every group of services that wait for each other (Tarjan's strongly connected
/// components, among those not already rejected): its members and one cycle in it.
fn cycles(
    parsed: &BTreeMap<String, Parsed>,
    skip: &BTreeSet<String>,
) -> Vec<(Vec<String>, Vec<String>)> {
    struct Walk<'a> {
        parsed: &'a BTreeMap<String, Parsed>,
        skip: &'a BTreeSet<String>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<(Vec<String>, Vec<String>)>,
    }
    impl<'a> Walk<'a> {
        fn edges(&self, v: &str) -> Vec<&'a str> {
            self.parsed.get(v).map_or_else(Vec::new, |p| {
                p.svc
                    .after
                    .iter()
                    .map(String::as_str)
                    .filter(|d| *d != v && self.parsed.contains_key(*d) && !self.skip.contains(*d))
                    .collect()
            })
        }
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges(v) {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.entry(v).or_insert(lw);
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.entry(v).or_insert(iw);
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(self.order(component));
                }
            }
        }
        /// One real cycle through the component's first member (shortest, by
        /// breadth-first search), so the message shows a loop the user can follow.
        fn order(&self, component: Vec<&'a str>) -> (Vec<String>, Vec<String>) {
            let members: BTreeSet<&str> = component.iter().copied().collect();
            let start = members.iter().next().copied().unwrap_or_default();
            let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
            let mut queue = std::collections::VecDeque::from([start]);
            let mut last = None;
            'search: while let Some(v) = queue.pop_front() {
                for w in self.edges(v) {
                    if !members.contains(w) {
                        continue;
                    }
                    if w == start {
                        last = Some(v);
                        break 'search;
                    }
                    if !came_from.contains_key(w) {
                        came_from.insert(w, v);
                        queue.push_back(w);
                    }
                }
            }
            let mut cycle = Vec::new();
            let mut at = last;
            while let Some(v) = at {
                cycle.push(v.to_string());
                at = if v == start {
                    None
                } else {
                    came_from.get(v).copied()
                };
            }
            cycle.reverse();
            let members = members.into_iter().map(str::to_string).collect();
            (members, cycle)
        }
    }
    let mut walk = Walk {
        parsed,
        skip,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for name in parsed.keys() {
        if !skip.contains(name) && !walk.index.contains_key(name.as_str()) {
            walk.visit(name);
        }
    }
    walk.found
}
