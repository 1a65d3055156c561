//! What the backend's tree costs: resident memory summed over the tree, CPU, and how many
//! processes it has, for `status`. Reads the process table through sysinfo; imports nothing
//! of the warden's own.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sysinfo::{Pid as SysPid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System};

/// How long CPU is measured over when there is no recent sample to compare with.
pub const CPU_WINDOW: Duration = Duration::from_millis(200);

/// A sample older than this is not compared with: the CPU figure would be an average over
/// too long a time to say what the backend does now.
const SAMPLE_MAX_AGE: Duration = Duration::from_secs(60);

/// The backend tree's use of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TreeUsage {
    /// Resident memory of every process of the tree, summed, in bytes.
    pub memory_bytes: u64,
    /// CPU used by the tree since the last sample (or over [`CPU_WINDOW`]), in percent of one
    /// core (two busy cores: 200).
    pub cpu_percent: f64,
    /// Live processes in the tree, the main one included.
    pub processes: usize,
}

/// Samples a tree; keeps the last sample so the next CPU figure needs no wait.
pub struct TreeSampler {
    system: System,
    /// (tree leader, when, CPU milliseconds by PID) of the last sample.
    last: Option<(u32, Instant, HashMap<u32, u64>)>,
}

/// One reading of the tree: (total RSS, CPU ms by PID).
struct Reading {
    memory: u64,
    cpu_ms: HashMap<u32, u64>,
}

impl TreeSampler {
    /// A sampler; `None` when the process table cannot be read on this system.
    pub fn new() -> Option<TreeSampler> {
        Some(TreeSampler {
            system: System::new().ok()?,
            last: None,
        })
    }

    /// The usage of the tree led by `leader` (the leader and all its descendants). `None` when
    /// the leader is gone.
    pub fn sample(&mut self, leader: u32) -> Option<TreeUsage> {
        let now = Instant::now();
        let recent = self
            .last
            .take()
            .filter(|(pid, at, _)| *pid == leader && now.duration_since(*at) <= SAMPLE_MAX_AGE);
        let (since, before) = match recent {
            Some((_, at, cpu)) => (at, cpu),
            None => {
                let first = self.read(leader)?;
                std::thread::sleep(CPU_WINDOW);
                (Instant::now() - CPU_WINDOW, first.cpu_ms)
            }
        };
        let reading = self.read(leader)?;
        let at = Instant::now();
        let elapsed_ms = at.duration_since(since).as_secs_f64() * 1000.0;
        // A process that started since the last sample counts from zero.
        let used_ms: u64 = reading
            .cpu_ms
            .iter()
            .map(|(pid, ms)| ms.saturating_sub(before.get(pid).copied().unwrap_or(0)))
            .sum();
        let cpu_percent = if elapsed_ms > 0.0 {
            (used_ms as f64 / elapsed_ms * 1000.0).round() / 10.0
        } else {
            0.0
        };
        let usage = TreeUsage {
            memory_bytes: reading.memory,
            cpu_percent,
            processes: reading.cpu_ms.len(),
        };
        self.last = Some((leader, at, reading.cpu_ms));
        Some(usage)
    }

    fn read(&mut self, leader: u32) -> Option<Reading> {
        let kind = ProcessRefreshKind::nothing()
            // sysinfo would otherwise list every thread as a process of its own.
            .without_tasks()
            .with_memory()
            .with_cpu();
        self.system
            .refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
        let processes = self.system.processes();
        let live = |pid: &SysPid| {
            processes
                .get(pid)
                .is_some_and(|p| !matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead))
        };
        let root = SysPid::from_u32(leader);
        if !live(&root) {
            return None;
        }
        let mut children: HashMap<SysPid, Vec<SysPid>> = HashMap::new();
        for (pid, process) in processes {
            if let Some(parent) = process.parent() {
                children.entry(parent).or_default().push(*pid);
            }
        }
        let mut seen = HashSet::from([root]);
        let mut stack = vec![root];
        let mut reading = Reading {
            memory: 0,
            cpu_ms: HashMap::new(),
        };
        while let Some(pid) = stack.pop() {
            if live(&pid)
                && let Some(process) = processes.get(&pid)
            {
                reading.memory += process.memory();
                reading
                    .cpu_ms
                    .insert(pid.as_u32(), process.accumulated_cpu_time());
            }
            for child in children.get(&pid).into_iter().flatten() {
                if seen.insert(*child) {
                    stack.push(*child);
                }
            }
        }
        Some(reading)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_a_tree_of_one_with_memory() {
        let mut sampler = TreeSampler::new().unwrap();
        let usage = sampler.sample(std::process::id()).unwrap();
        assert!(usage.processes >= 1, "{usage:?}");
        assert!(usage.memory_bytes > 1_000_000, "{usage:?}");
        assert!(usage.cpu_percent >= 0.0, "{usage:?}");
        // The second sample compares with the first: no wait, same figures' kind.
        let again = sampler.sample(std::process::id()).unwrap();
        assert!(again.memory_bytes > 1_000_000, "{again:?}");
        assert_eq!(sampler.sample(u32::MAX - 7), None);
    }
}
