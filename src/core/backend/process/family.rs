//! A process's descendants from a snapshot of the process table, without links that cannot be
//! true. On Windows a process keeps the PID of its parent after the parent died, and PIDs are
//! reused: a "parent" PID may name an unrelated process started later. A child is never older
//! than its parent, so a link from a child that started before its parent is dropped (psutil
//! does the same), and so is a link whose start times are unknown. Pure: the snapshot is taken
//! by the platform code.
use std::collections::HashMap;

use crate::engine::supervisor::Pid;

/// One row of a process snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The process.
    pub pid: Pid,
    /// The PID it names as its parent.
    pub parent: Pid,
    /// When it started, in any unit that orders (Windows: FILETIME ticks); `None` if unknown.
    pub started: Option<u64>,
}

/// Every process below `root` (not `root` itself), parents before their children.
pub fn descendants(root: Pid, snapshot: &[Entry]) -> Vec<Pid> {
    let started: HashMap<Pid, Option<u64>> = snapshot.iter().map(|e| (e.pid, e.started)).collect();
    let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
    for e in snapshot {
        if e.pid == e.parent {
            continue; // the idle process names itself
        }
        let parent_started = started.get(&e.parent).copied().flatten();
        if let (Some(parent), Some(child)) = (parent_started, e.started)
            && parent <= child
        {
            children.entry(e.parent).or_default().push(e.pid);
        }
    }
    let mut out: Vec<Pid> = Vec::new();
    let mut i = 0;
    let mut next = vec![root];
    while let Some(&pid) = next.get(i) {
        i += 1;
        for &kid in children.get(&pid).map_or(&[][..], Vec::as_slice) {
            if kid != root && !out.contains(&kid) {
                out.push(kid);
                next.push(kid);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pid: Pid, parent: Pid, started: u64) -> Entry {
        Entry {
            pid,
            parent,
            started: Some(started),
        }
    }

    #[test]
    fn children_and_grandchildren_in_order() {
        let snapshot = [
            e(10, 1, 100),
            e(11, 10, 110),
            e(12, 10, 120),
            e(13, 11, 130),
            e(20, 1, 50),
        ];
        assert_eq!(descendants(10, &snapshot), vec![11, 12, 13]);
        assert_eq!(descendants(20, &snapshot), Vec::<Pid>::new());
    }

    #[test]
    fn a_child_older_than_its_parent_is_not_its_child() {
        // 30 died; its PID went to a new process (started at 500). 31 and 32 are the dead
        // process's children and still name 30; 33 is the new process's own child.
        let snapshot = [
            e(30, 1, 500),
            e(31, 30, 200),
            e(32, 31, 210),
            e(33, 30, 510),
        ];
        assert_eq!(descendants(30, &snapshot), vec![33]);
    }

    #[test]
    fn a_child_started_in_the_same_tick_counts() {
        assert_eq!(descendants(1, &[e(1, 0, 7), e(2, 1, 7)]), vec![2]);
    }

    #[test]
    fn unknown_start_times_and_loops_are_no_links() {
        let unknown = Entry {
            pid: 41,
            parent: 40,
            started: None,
        };
        assert_eq!(descendants(40, &[e(40, 1, 1), unknown]), Vec::<Pid>::new());
        // A cycle of reused PIDs (only possible with equal times) ends.
        assert_eq!(descendants(50, &[e(50, 51, 9), e(51, 50, 9)]), vec![51]);
        // The idle process names itself.
        assert_eq!(descendants(0, &[e(0, 0, 0), e(4, 0, 1)]), vec![4]);
    }
}
