//! Other systems (Windows, macOS): no cheap way to tell which processes are new, so every scan
//! reads the whole table; netstat2 names the owners of the listening sockets. Same signatures
//! as `linux.rs`. May import `std`, `sysinfo` and `netstat2`; nothing of the warden's own.

use std::collections::HashMap;

use sysinfo::{Pid as SysPid, Process};

use super::Plan;

/// Tells which processes each scan must read: all of them, here.
#[derive(Debug)]
pub struct TableWatch;

impl TableWatch {
    /// A watch that asks for a full read every time.
    pub fn new() -> TableWatch {
        TableWatch
    }

    /// Everything, every time.
    pub fn plan(&mut self, _table: &HashMap<SysPid, Process>, _full: bool) -> Plan {
        Plan::Full
    }
}

/// The holders of a port's listening sockets: the socket table names them, so nothing is
/// kept between scans here.
#[derive(Debug, Default)]
pub struct Listeners;

impl Listeners {
    /// PIDs with a listening TCP socket on `port`, as [`listening_pids`] finds them.
    pub fn holders(
        &mut self,
        port: u16,
        likely: impl IntoIterator<Item = Vec<u32>>,
        _no_new_processes: bool,
    ) -> Vec<u32> {
        listening_pids(port, likely)
    }
}

/// PIDs with a listening TCP socket on `port` (IPv4 or IPv6), dead ones included (Windows
/// reports sockets inherited by a child under the dead parent's PID). The likely holders are
/// no help here: the socket table names its owners itself.
pub fn listening_pids(port: u16, _likely: impl IntoIterator<Item = Vec<u32>>) -> Vec<u32> {
    use netstat2::{AddressFamilyFlags, ProtocolFlags, ProtocolSocketInfo, TcpState};
    let Ok(sockets) = netstat2::get_sockets_info(
        AddressFamilyFlags::IPV4 | AddressFamilyFlags::IPV6,
        ProtocolFlags::TCP,
    ) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = sockets
        .into_iter()
        .filter(|s| {
            matches!(&s.protocol_socket_info,
                ProtocolSocketInfo::Tcp(t) if t.local_port == port && t.state == TcpState::Listen)
        })
        .flat_map(|s| s.associated_pids)
        // Wine (and some sandboxes) report no owner as PID 0: nobody to name.
        .filter(|pid| *pid != 0)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// A process's start time at full resolution: sysinfo gives whole seconds only here.
pub fn start_ticks(_pid: u32) -> Option<u64> {
    None
}

/// Sends `signal` to `p` (the caller has checked its start time); where the platform has no
/// such signal (Windows and SIGTERM), kills it.
pub fn signal(p: &Process, _ticks: Option<u64>, signal: sysinfo::Signal) {
    if p.kill_with(signal).is_none() {
        p.kill();
    }
}

/// Stops wrappers before their copy, so that a restart loop cannot start a new one: SIGSTOP
/// where there are signals, and where there are none (Windows) a kill, wrappers first.
pub(super) fn freeze(system: &sysinfo::System, wrappers: &[super::Victim]) {
    for w in wrappers {
        if let Some(p) = system.process(SysPid::from_u32(w.pid))
            && p.start_time() == w.started
            && p.kill_with(sysinfo::Signal::Stop).is_none()
        {
            p.kill();
        }
    }
}

/// Whether anything listens on `port`, whoever it is.
pub fn port_listened(port: u16) -> bool {
    use netstat2::{AddressFamilyFlags, ProtocolFlags, ProtocolSocketInfo, TcpState};
    netstat2::get_sockets_info(
        AddressFamilyFlags::IPV4 | AddressFamilyFlags::IPV6,
        ProtocolFlags::TCP,
    )
    .is_ok_and(|sockets| {
        sockets.iter().any(|s| {
            matches!(&s.protocol_socket_info,
                ProtocolSocketInfo::Tcp(t) if t.local_port == port && t.state == TcpState::Listen)
        })
    })
}
