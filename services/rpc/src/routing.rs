//! Which replica of a role takes a call. Successive calls of one α-UMi task share long
//! prompt prefixes (tool docs, then the trajectory), and sibling branches of its DFS tree
//! share their parent's, so a replica that served the task's last call of a role holds
//! most of the next prompt in its prefix cache. Task affinity keeps a task on that
//! replica (its first call: the replica its id hashes to, rendezvous hashing) unless the
//! replica carries more than `LOAD_FACTOR` times the mean load (bounded-load consistent
//! hashing, Mirrokni et al. 2018); then, and for calls outside a task, the least loaded
//! replica takes it.

use std::collections::HashMap;
use std::sync::Mutex;

use umi_core::agent::RoleKind;
use umi_core::task::{fnv1a, mix64};

/// How a call picks among a role's live replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// The replica with the fewest calls outstanding from this client.
    LeastOutstanding,
    /// A task's calls of a role stay on one replica while its load allows.
    #[default]
    Affinity,
}

/// A replica may hold up to this many times the mean outstanding load (plus the call
/// being placed) and still take its tasks' calls.
pub const LOAD_FACTOR: f64 = 1.25;

/// Tasks remembered; past it the older half is forgotten (their next call is placed by
/// hash again).
const MAX_REMEMBERED: usize = 65_536;

/// A replica as the router sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub address: &'a str,
    /// Failed recently: used only when no other replica is left.
    pub cooling: bool,
    pub outstanding: usize,
}

/// Where each task's last call of each role went.
#[derive(Default)]
pub struct AffinityTable {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    last: HashMap<(RoleKind, String), (String, u64)>,
    clock: u64,
}

impl AffinityTable {
    /// Notes that `address` served `task`'s call of `role`.
    pub fn served(&self, role: RoleKind, task: &str, address: &str) {
        if task.is_empty() {
            return;
        }
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.clock += 1;
        let now = t.clock;
        t.last
            .insert((role, task.to_string()), (address.to_string(), now));
        if t.last.len() > MAX_REMEMBERED {
            let keep_after = now - (MAX_REMEMBERED / 2) as u64;
            t.last.retain(|_, (_, at)| *at > keep_after);
        }
    }

    fn last(&self, role: RoleKind, task: &str) -> Option<String> {
        let t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.last
            .get(&(role, task.to_string()))
            .map(|(a, _)| a.clone())
    }
}

/// The index in `candidates` that takes a call of `task` (empty: outside a task).
pub fn choose(
    routing: Routing,
    table: &AffinityTable,
    role: RoleKind,
    task: &str,
    candidates: &[Candidate<'_>],
) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    if routing == Routing::Affinity && !task.is_empty() {
        let total: usize = candidates.iter().map(|c| c.outstanding).sum();
        let bound = (LOAD_FACTOR * (total + 1) as f64 / candidates.len() as f64).ceil() as usize;
        let sticky = table.last(role, task);
        // The task's last replica first, then the others by their hash weight.
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by_key(|&i| {
            let c = &candidates[i];
            let is_sticky = sticky.as_deref() == Some(c.address);
            (!is_sticky, std::cmp::Reverse(weight(task, c.address)))
        });
        if let Some(&i) = order
            .iter()
            .find(|&&i| !candidates[i].cooling && candidates[i].outstanding < bound)
        {
            return Some(i);
        }
    }
    (0..candidates.len()).min_by_key(|&i| (candidates[i].cooling, candidates[i].outstanding))
}

/// Rendezvous weight of a task on a replica: every client ranks replicas alike. The
/// addresses differ at their end, which FNV-1a alone barely mixes into its high bits.
fn weight(task: &str, address: &str) -> u64 {
    mix64(fnv1a(task.bytes().chain([0]).chain(address.bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(address: &str, outstanding: usize) -> Candidate<'_> {
        Candidate {
            address,
            cooling: false,
            outstanding,
        }
    }

    #[test]
    fn a_task_stays_on_the_replica_that_served_it_while_its_load_is_bounded() {
        let table = AffinityTable::default();
        let replicas = [c("a", 0), c("b", 0), c("c", 0)];
        let first = choose(
            Routing::Affinity,
            &table,
            RoleKind::Planner,
            "t1",
            &replicas,
        )
        .unwrap();
        // The hash choice is stable.
        assert_eq!(
            choose(
                Routing::Affinity,
                &table,
                RoleKind::Planner,
                "t1",
                &replicas
            ),
            Some(first)
        );
        // Once served elsewhere, the task follows its last replica.
        let other = (first + 1) % 3;
        table.served(RoleKind::Planner, "t1", replicas[other].address);
        assert_eq!(
            choose(
                Routing::Affinity,
                &table,
                RoleKind::Planner,
                "t1",
                &replicas
            ),
            Some(other)
        );
        // The caller role is placed on its own.
        assert_eq!(
            choose(Routing::Affinity, &table, RoleKind::Caller, "t1", &replicas),
            Some(first)
        );
        // Loaded past 1.25x the mean, it moves to the next replica that has room.
        let mut loaded = replicas.clone();
        loaded[other].outstanding = 4;
        let moved = choose(Routing::Affinity, &table, RoleKind::Planner, "t1", &loaded).unwrap();
        assert_ne!(moved, other);
        assert_eq!(loaded[moved].outstanding, 0);
    }

    #[test]
    fn tasks_spread_over_replicas_and_calls_outside_a_task_go_to_the_least_loaded() {
        let table = AffinityTable::default();
        let replicas = [c("a", 0), c("b", 0), c("c", 0), c("d", 0)];
        let mut per = [0usize; 4];
        for t in 0..400 {
            let i = choose(
                Routing::Affinity,
                &table,
                RoleKind::Planner,
                &format!("task-{t}"),
                &replicas,
            );
            per[i.unwrap()] += 1;
        }
        assert!(per.iter().all(|&n| (60..140).contains(&n)), "{per:?}");
        let busy = [c("a", 3), c("b", 1), c("c", 2)];
        assert_eq!(
            choose(Routing::Affinity, &table, RoleKind::Planner, "", &busy),
            Some(1)
        );
        assert_eq!(
            choose(
                Routing::LeastOutstanding,
                &table,
                RoleKind::Planner,
                "task-1",
                &busy
            ),
            Some(1)
        );
    }

    #[test]
    fn a_cooling_replica_is_left_while_another_exists() {
        let table = AffinityTable::default();
        table.served(RoleKind::Planner, "t", "a");
        let replicas = [
            Candidate {
                address: "a",
                cooling: true,
                outstanding: 0,
            },
            c("b", 1),
        ];
        assert_eq!(
            choose(Routing::Affinity, &table, RoleKind::Planner, "t", &replicas),
            Some(1)
        );
        assert_eq!(
            choose(
                Routing::Affinity,
                &table,
                RoleKind::Planner,
                "t",
                &replicas[..1]
            ),
            Some(0)
        );
    }
}
