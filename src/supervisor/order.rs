//! `after` ordering: which services start first and which may stop now. Config
//! validation has already refused unknown names and cycles; these functions still
//! terminate on a cycle (its members come last, in name order).

use std::collections::{BTreeMap, BTreeSet};

use super::model::Service;

/// Names in an order where every service comes after the ones it lists in `after`.
pub fn start_order(services: &BTreeMap<String, Service>) -> Vec<String> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::with_capacity(services.len());
    loop {
        let ready: Vec<&String> = services
            .iter()
            .filter(|(name, svc)| {
                !done.contains(name.as_str())
                    && svc
                        .cfg
                        .after
                        .iter()
                        .all(|d| done.contains(d.as_str()) || !services.contains_key(d))
            })
            .map(|(name, _)| name)
            .collect();
        if ready.is_empty() {
            break;
        }
        for name in ready {
            done.insert(name);
            out.push(name.clone());
        }
    }
    out.extend(
        services
            .keys()
            .filter(|n| !done.contains(n.as_str()))
            .cloned(),
    );
    out
}

/// Services with a run not yet being stopped, that no other service with a run comes
/// `after`: the ones a shutdown may stop now, in parallel.
pub fn stoppable(services: &BTreeMap<String, Service>) -> Vec<String> {
    services
        .iter()
        .filter(|(_, svc)| svc.run.as_ref().is_some_and(|r| r.stopping.is_none()))
        .filter(|(name, _)| {
            !services.iter().any(|(other, s)| {
                other != *name && s.run.is_some() && s.cfg.after.iter().any(|d| d == *name)
            })
        })
        .map(|(name, _)| name.clone())
        .collect()
}
