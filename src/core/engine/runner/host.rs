//! The process layer as the runner uses it: launch or adopt a backend tree, ask it to stop,
//! kill it, let it go, tell when it is gone, and wait for its leader. [`OsHost`] is the real
//! one ([`crate::backend::process`], with the tree guardian); the runner's unit tests put a fake in its
//! place. May import the process layer only.

use std::io::{self, Read};
use std::time::Duration;

use tracing::error;

use crate::backend::process::{self, Asked, LaunchError, LaunchSpec, Tree, TreeGuard};
use crate::engine::supervisor::{ExitStatus, Pid};

/// Where backend trees come from.
pub trait Host: Send + 'static {
    /// A backend tree.
    type Tree: HostTree;

    /// Launches `spec` as the root of a tree of its own, its output piped.
    fn launch(&mut self, spec: &LaunchSpec) -> Result<Started<Self::Tree>, LaunchError>;

    /// Takes charge of the running process `pid` and its tree (its output is not ours).
    fn adopt(&mut self, pid: Pid) -> io::Result<Started<Self::Tree>>;

    /// Stops guarding `tree`: it is gone, or let go.
    fn forget(&mut self, tree: &Self::Tree);
}

/// A backend tree: what the runner does to it.
pub trait HostTree: std::fmt::Debug + Send + 'static {
    /// Asks every process of the tree to stop gracefully.
    fn terminate(&self, grace: Duration) -> io::Result<Asked>;

    /// Kills every process of the tree.
    fn kill(&self) -> io::Result<()>;

    /// Lets the tree outlive the warden.
    fn release(self) -> io::Result<()>;

    /// True once no process of the tree is left.
    fn is_gone(&self) -> bool;

    /// Kills the tree from another thread (the one that waits for its leader).
    fn killer(&self) -> Box<dyn Fn() + Send>;
}

/// Waits for a tree's leader to exit, on a thread of its own.
pub trait LeaderWait: Send {
    /// Blocks until the leader exits, calls `on_exit`, then reaps it (when it is our child).
    fn wait_then(self: Box<Self>, on_exit: Box<dyn FnOnce() + '_>) -> io::Result<ExitStatus>;
}

/// A tree just launched or adopted.
pub struct Started<T> {
    /// Its leader.
    pub pid: Pid,
    /// The whole tree.
    pub tree: T,
    /// Waits for the leader.
    pub waiter: Box<dyn LeaderWait>,
    /// Its standard output and error (none when adopted).
    pub output: Option<Output>,
}

/// A backend's standard output and error.
pub type Output = (Box<dyn Read + Send>, Box<dyn Read + Send>);

/// The real process layer, with the guardian that kills this warden's trees if it dies.
#[derive(Debug)]
pub struct OsHost {
    guard: TreeGuard,
}

impl OsHost {
    /// The process layer, guarded by `guard`.
    pub fn new(guard: TreeGuard) -> OsHost {
        OsHost { guard }
    }
}

impl Host for OsHost {
    type Tree = Tree;

    fn launch(&mut self, spec: &LaunchSpec) -> Result<Started<Tree>, LaunchError> {
        let launched = process::launch(spec, &mut self.guard)?;
        Ok(Started {
            pid: launched.pid,
            tree: launched.tree,
            waiter: Box::new(launched.waiter),
            output: Some((Box::new(launched.stdout), Box::new(launched.stderr))),
        })
    }

    fn adopt(&mut self, pid: Pid) -> io::Result<Started<Tree>> {
        let (tree, waiter) = process::adopt(pid)?;
        if let Err(e) = self.guard.watch(&tree) {
            error!(pid, error = %e, "could not register the adopted tree with the guardian");
        }
        Ok(Started {
            pid,
            tree,
            waiter: Box::new(waiter),
            output: None,
        })
    }

    fn forget(&mut self, tree: &Tree) {
        let _ = self.guard.forget(tree);
    }
}

impl HostTree for Tree {
    fn terminate(&self, grace: Duration) -> io::Result<Asked> {
        Tree::terminate(self, grace)
    }

    fn kill(&self) -> io::Result<()> {
        Tree::kill(self)
    }

    fn release(self) -> io::Result<()> {
        Tree::release(self)
    }

    fn is_gone(&self) -> bool {
        Tree::is_gone(self)
    }

    fn killer(&self) -> Box<dyn Fn() + Send> {
        let killer = Tree::killer(self);
        Box::new(move || killer.kill())
    }
}

impl LeaderWait for process::ExitWaiter {
    fn wait_then(self: Box<Self>, on_exit: Box<dyn FnOnce() + '_>) -> io::Result<ExitStatus> {
        process::ExitWaiter::wait_then(*self, on_exit)
    }
}
