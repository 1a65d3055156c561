//! Linux: which processes a scan must read, and who holds a listening socket, without reading
//! every process. May import `std`, `sysinfo`, `netstat2` and the netlink crates; nothing of
//! the warden's own.
//!
//! A process is new or *reused* (a PID handed out again) only if the kernel allocated its PID
//! since the last scan; /proc/loadavg names the last PID allocated, so the candidates are the
//! PIDs in the cyclic range (last scan's last PID, this one's]. Everything else in the table is
//! the same process as before. A small range (threads take PIDs too: a few a second on a quiet
//! machine) is looked at PID by PID; /proc is listed only for a large one, and once a minute
//! to notice exits, which nothing needs at once: the processes that match are read every scan
//! anyway, and an exited PID handed out again falls in a later range.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use sysinfo::{Pid as SysPid, Process};

use super::Plan;

/// More PIDs than this handed out since the last scan and the range is not trusted (the
/// counter may have gone round the whole PID space): read everything.
const MAX_TRUSTED_RANGE: u32 = 4096;

/// At most this many PIDs handed out since the last scan are looked at one by one; for more,
/// /proc is listed.
const MAX_PROBED: u32 = 64;

/// Scans between two listings of /proc (a minute at the default 5 s).
const LISTING_EVERY: u32 = 12;

/// Tells which processes each scan must read.
#[derive(Debug)]
pub struct TableWatch {
    /// The kernel's last allocated PID when the table was last brought up to date.
    last_pid: Option<u32>,
    /// /proc/sys/kernel/pid_max: PIDs are below it and wrap there.
    pid_max: u32,
    /// Scans since /proc was last listed.
    since_listing: u32,
}

impl TableWatch {
    /// A watch that asks for a full read first.
    pub fn new() -> TableWatch {
        TableWatch {
            last_pid: None,
            pid_max: read_pid_max(),
            since_listing: 0,
        }
    }

    /// What to read now to bring `table` up to date (everything, with `full`). Call it right
    /// before reading: PIDs handed out from this moment on are the next plan's business.
    pub fn plan(&mut self, table: &HashMap<SysPid, Process>, full: bool) -> Plan {
        // The counter before the listing: a process born in between is listed and unknown,
        // or handed out after this reading and inside the next range; never missed.
        let now = read_last_pid();
        let previous = std::mem::replace(&mut self.last_pid, now);
        if full {
            return Plan::Full;
        }
        let (Some(previous), Some(now)) = (previous, now) else {
            return Plan::Full;
        };
        if now < previous || now >= self.pid_max {
            // Wrapped, or pid_max was changed: its current value bounds the range.
            self.pid_max = read_pid_max();
        }
        let allocated = allocated_since(previous, now, self.pid_max);
        if allocated == Allocated::Unknown {
            return Plan::Full;
        }
        let pids = allocated.pids(self.pid_max);
        if self.since_listing + 1 < LISTING_EVERY && pids.len() <= MAX_PROBED as usize {
            self.since_listing += 1;
            let fresh = pids
                .into_iter()
                .filter(|pid| is_live_process(*pid))
                .collect();
            return Plan::Changes {
                fresh,
                gone: Vec::new(),
            };
        }
        self.since_listing = 0;
        let Ok(listed) = listed_pids() else {
            return Plan::Full;
        };
        let known = table.keys().map(|p| p.as_u32()).collect();
        let (fresh, gone) = changes(listed, known, allocated);
        Plan::Changes { fresh, gone }
    }
}

/// The PIDs the kernel may have handed out between two readings of its last allocated PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allocated {
    /// None: the counter has not moved.
    Nothing,
    /// The cyclic range (`after`, `upto`], wrapping below pid_max.
    Range { after: u32, upto: u32 },
    /// Too many, or readings that make no sense (pid_max lowered): anything may be new.
    Unknown,
}

impl Allocated {
    /// The PIDs of the range, in order of allocation (none for `Unknown`).
    fn pids(self, pid_max: u32) -> Vec<u32> {
        match self {
            Allocated::Nothing | Allocated::Unknown => Vec::new(),
            Allocated::Range { after, upto } if after < upto => (after + 1..=upto).collect(),
            Allocated::Range { after, upto } => (after + 1..pid_max).chain(1..=upto).collect(),
        }
    }

    fn contains(self, pid: u32) -> bool {
        match self {
            Allocated::Nothing => false,
            Allocated::Range { after, upto } if after < upto => after < pid && pid <= upto,
            Allocated::Range { after, upto } => pid > after || pid <= upto,
            Allocated::Unknown => true,
        }
    }
}

/// The range of PIDs handed out since the counter read `previous`, now that it reads `now`.
fn allocated_since(previous: u32, now: u32, pid_max: u32) -> Allocated {
    if previous >= pid_max || now >= pid_max {
        return Allocated::Unknown;
    }
    if now == previous {
        return Allocated::Nothing;
    }
    let count = if now > previous {
        now - previous
    } else {
        // Up to the top, then from the bottom again (the kernel restarts at 300 or 1;
        // counting from 1 only overestimates).
        (pid_max - 1 - previous) + now
    };
    if count > MAX_TRUSTED_RANGE {
        Allocated::Unknown
    } else {
        Allocated::Range {
            after: previous,
            upto: now,
        }
    }
}

/// PIDs to read (`listed` and either unknown or possibly reused) and PIDs gone from the
/// listing. PIDs that are not listed are never proposed: /proc lists processes only, and a
/// thread ID probed directly would look like a process.
fn changes(
    mut listed: Vec<u32>,
    mut known: Vec<u32>,
    allocated: Allocated,
) -> (Vec<u32>, Vec<u32>) {
    // Sorted vectors, not hash sets: this runs every scan over every PID.
    listed.sort_unstable();
    known.sort_unstable();
    let fresh = listed
        .iter()
        .copied()
        .filter(|pid| known.binary_search(pid).is_err() || allocated.contains(*pid))
        .collect();
    let gone = known
        .into_iter()
        .filter(|pid| listed.binary_search(pid).is_err())
        .collect();
    (fresh, gone)
}

/// The 5th field of /proc/loadavg, "0.00 0.01 0.05 1/123 45678": the last PID handed out.
fn parse_last_pid(loadavg: &str) -> Option<u32> {
    loadavg.split_whitespace().nth(4)?.parse().ok()
}

fn read_last_pid() -> Option<u32> {
    parse_last_pid(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn read_pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        // The kernel's default without the sysctl: a range check against it fails safe.
        .unwrap_or(32768)
}

/// Whether `pid` is a live process: /proc/PID exists for a thread's ID too (unlisted), so its
/// thread group must be itself.
fn is_live_process(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Tgid:"))
            .and_then(|tgid| tgid.trim().parse::<u32>().ok())
            == Some(pid)
    })
}

/// The PIDs /proc lists: thread-group leaders, never thread IDs.
fn listed_pids() -> std::io::Result<Vec<u32>> {
    Ok(std::fs::read_dir("/proc")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// The listening sockets on a port and their holders as last found, so that a scan that finds
/// the same sockets, and no process that could have come to hold them, looks for no owners.
#[derive(Debug, Default)]
pub struct Listeners {
    port: u16,
    inodes: HashSet<u32>,
    pids: Vec<u32>,
}

impl Listeners {
    /// PIDs with a listening TCP socket on `port`, as [`listening_pids`] finds them, or as
    /// found last time when the kernel lists the same sockets, `no_new_processes` says no
    /// process has started since, and every last holder still runs (only a new process
    /// inherits a socket; passing one to another process over a Unix socket is not noticed
    /// until the sockets change).
    pub fn holders(
        &mut self,
        port: u16,
        likely: impl IntoIterator<Item = Vec<u32>>,
        no_new_processes: bool,
    ) -> Vec<u32> {
        let inodes = listening_inodes(port);
        if no_new_processes
            && port == self.port
            && inodes == self.inodes
            && self.pids.iter().all(|pid| is_live_process(*pid))
        {
            return self.pids.clone();
        }
        let pids = owners(&inodes, likely);
        *self = Listeners {
            port,
            inodes,
            pids: pids.clone(),
        };
        pids
    }
}

/// PIDs with a listening TCP socket on `port` (IPv4 or IPv6). The sockets come from the socket
/// table alone; their owners are looked for among `likely` (groups of likely holders, the
/// likeliest first; a group is only computed if the ones before leave a socket unaccounted
/// for) and, failing that, among every open file on the machine.
pub fn listening_pids(port: u16, likely: impl IntoIterator<Item = Vec<u32>>) -> Vec<u32> {
    owners(&listening_inodes(port), likely)
}

/// The processes holding `listeners` (socket inodes), looked for as [`listening_pids`] says.
fn owners(listeners: &HashSet<u32>, likely: impl IntoIterator<Item = Vec<u32>>) -> Vec<u32> {
    if listeners.is_empty() {
        return Vec::new();
    }
    let mut unaccounted = listeners.clone();
    let mut checked = HashSet::new();
    let mut pids = Vec::new();
    for group in likely {
        for pid in group {
            if pid == 0 || !checked.insert(pid) {
                continue;
            }
            let held = socket_inodes(pid);
            if held.iter().any(|inode| listeners.contains(inode)) {
                pids.push(pid);
                unaccounted.retain(|inode| !held.contains(inode));
            }
        }
        if unaccounted.is_empty() {
            break;
        }
    }
    if !unaccounted.is_empty() {
        pids.extend(owners_anywhere(&unaccounted));
    }
    // Wine (and some sandboxes) report no owner as PID 0: nobody to name.
    pids.retain(|pid| *pid != 0);
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The inodes of the TCP sockets listening on `port` (IPv4 and IPv6), from the kernel's socket
/// table. Asks for listening sockets only: a dump of every state (what netstat2 asks for)
/// walks the whole hash table of connections, milliseconds on a machine with much memory.
fn listening_inodes(port: u16) -> HashSet<u32> {
    use netlink_packet_sock_diag::{AF_INET, AF_INET6};
    let mut inodes = HashSet::new();
    for family in [AF_INET, AF_INET6] {
        // As before netstat2: a socket table that cannot be read names no holders.
        let _ = dump_listeners(family, port, &mut inodes);
    }
    inodes
}

/// One sock_diag dump of the listening TCP sockets of `family`, keeping those on `port`.
fn dump_listeners(family: u8, port: u16, inodes: &mut HashSet<u32>) -> std::io::Result<()> {
    use netlink_packet_core::{
        NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    };
    use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
    use netlink_packet_sock_diag::{AF_INET, IPPROTO_TCP, SockDiagMessage};
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0)?;
    let mut buffer = vec![0u8; 16384];
    loop {
        let size = socket.recv(&mut &mut buffer[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&buffer[offset..size])
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(socket))
                    if socket.header.socket_id.source_port == port =>
                {
                    inodes.insert(socket.header.inode);
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => return Err(std::io::Error::other(format!("{e:?}"))),
                _ => {}
            }
            if length == 0 {
                break; // a malformed message: never loop on it
            }
            offset += length;
        }
    }
}

/// The inodes of the sockets `pid` has open ("socket:[INODE]" links in /proc/PID/fd); none if
/// it is gone or not ours to inspect.
fn socket_inodes(pid: u32) -> Vec<u32> {
    let Ok(fds) = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")) else {
        return Vec::new();
    };
    fds.filter_map(|fd| {
        let target = std::fs::read_link(fd.ok()?.path()).ok()?;
        parse_socket_link(target.to_str()?)
    })
    .collect()
}

fn parse_socket_link(target: &str) -> Option<u32> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The owners of `inodes`, found the slow way: netstat2 walks every /proc/*/fd.
fn owners_anywhere(inodes: &HashSet<u32>) -> Vec<u32> {
    use netstat2::{AddressFamilyFlags, ProtocolFlags};
    netstat2::get_sockets_info(
        AddressFamilyFlags::IPV4 | AddressFamilyFlags::IPV6,
        ProtocolFlags::TCP,
    )
    .map(|sockets| {
        sockets
            .into_iter()
            .filter(|s| inodes.contains(&s.inode))
            .flat_map(|s| s.associated_pids)
            .collect()
    })
    .unwrap_or_default()
}

/// A process's start time at the kernel's full resolution: clock ticks since boot (field 22 of
/// /proc/PID/stat). Two processes that share a PID within one second differ here.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) is in parentheses and may hold spaces and parentheses itself.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Sends `signal` to `pid` only while it is the process that started at `ticks`: through a
/// pidfd, which stays bound to that process once opened, so a PID reused between the check
/// and the signal cannot be hit. Kernels without pidfds (before 5.3) get a checked kill.
fn send(pid: u32, ticks: Option<u64>, signal: nix::libc::c_int) {
    use nix::libc;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open(pid, flags) has no pointer arguments; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        if ticks.is_none() || start_ticks(pid) == ticks {
            // SAFETY: kill(2) has no pointer arguments.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
        return;
    }
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The pidfd names whatever process had the PID when it was opened: check that it is ours.
    if ticks.is_some() && start_ticks(pid) != ticks {
        return;
    }
    // SAFETY: a valid pidfd, a signal number, a null siginfo (allowed: the kernel fills in a
    // default one) and no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
}

/// Sends `signal` to `p` if it is still the process that started at `ticks`.
pub fn signal(p: &Process, ticks: Option<u64>, signal: sysinfo::Signal) {
    let signo = match signal {
        sysinfo::Signal::Term => nix::libc::SIGTERM,
        sysinfo::Signal::Stop => nix::libc::SIGSTOP,
        _ => nix::libc::SIGKILL,
    };
    send(p.pid().as_u32(), ticks, signo);
}

/// Stops wrappers where they stand (SIGSTOP cannot be caught): a restart loop must not start
/// a new copy while the old one is being stopped. The kill that follows ends them.
pub(super) fn freeze(_system: &sysinfo::System, wrappers: &[super::Victim]) {
    for w in wrappers {
        send(w.pid, w.ticks, nix::libc::SIGSTOP);
    }
}

/// Whether anything listens on `port`, whoever it is (another user's socket has no owner this
/// user can find).
pub fn port_listened(port: u16) -> bool {
    !listening_inodes(port).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 32768;

    #[test]
    fn the_counter_gives_the_range_of_new_pids() {
        // (previous, now, pid_max, what may be new)
        let table = [
            (500, 500, MAX, Allocated::Nothing),
            (
                500,
                520,
                MAX,
                Allocated::Range {
                    after: 500,
                    upto: 520,
                },
            ),
            // wrapped at pid_max: from the top, then from the bottom again
            (
                32760,
                310,
                MAX,
                Allocated::Range {
                    after: 32760,
                    upto: 310,
                },
            ),
            // too many handed out to trust the range
            (500, 500 + MAX_TRUSTED_RANGE + 1, MAX, Allocated::Unknown),
            (32000, 4000, MAX, Allocated::Unknown),
            (
                MAX - 1 - 100,
                MAX_TRUSTED_RANGE - 100,
                MAX,
                Allocated::Range {
                    after: MAX - 1 - 100,
                    upto: MAX_TRUSTED_RANGE - 100,
                },
            ),
            (
                MAX - 1 - 100,
                MAX_TRUSTED_RANGE - 99,
                MAX,
                Allocated::Unknown,
            ),
            // pid_max was lowered below what we saw: nothing can be told
            (40000, 40001, MAX, Allocated::Unknown),
            (100, 40001, MAX, Allocated::Unknown),
        ];
        for (previous, now, pid_max, want) in table {
            assert_eq!(
                allocated_since(previous, now, pid_max),
                want,
                "{previous} -> {now} (pid_max {pid_max})"
            );
        }
    }

    #[test]
    fn a_range_is_looked_at_pid_by_pid_in_allocation_order() {
        assert_eq!(
            Allocated::Range {
                after: 10,
                upto: 13
            }
            .pids(100),
            [11, 12, 13]
        );
        assert_eq!(
            Allocated::Range { after: 97, upto: 2 }.pids(100),
            [98, 99, 1, 2]
        );
        assert!(Allocated::Nothing.pids(100).is_empty());
        assert!(Allocated::Unknown.pids(100).is_empty());
    }

    #[test]
    fn only_live_thread_group_leaders_are_processes() {
        let me = std::process::id();
        assert!(is_live_process(me));
        // A thread's ID opens as /proc/TID too, but is not a process.
        let (ready, wait) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            ready.send(()).unwrap();
            let _ = stopped.recv();
        });
        wait.recv().unwrap();
        let tids: Vec<u32> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|tid| *tid != me)
            .collect();
        assert!(!tids.is_empty());
        assert!(tids.iter().all(|tid| !is_live_process(*tid)), "{tids:?}");
        drop(stop);
        thread.join().unwrap();
        // No process has a PID of pid_max or more. (Not a spawned and reaped child: the other
        // tests here look for the processes holding their sockets, and a child between its
        // spawn and its exec holds them too.)
        assert!(!is_live_process(read_pid_max()));
    }

    #[test]
    fn range_membership_wraps() {
        let straight = allocated_since(500, 520, MAX);
        assert!(!straight.contains(500), "the previous last PID is old");
        assert!(straight.contains(501) && straight.contains(520));
        assert!(!straight.contains(521) && !straight.contains(10));
        let wrapped = allocated_since(32760, 310, MAX);
        for pid in [32761, 32767, 1, 300, 310] {
            assert!(wrapped.contains(pid), "{pid}");
        }
        for pid in [32760, 311, 5000] {
            assert!(!wrapped.contains(pid), "{pid}");
        }
        assert!(!Allocated::Nothing.contains(500));
    }

    #[test]
    fn changes_read_new_and_reused_pids_and_drop_gone_ones() {
        // Known: 10, 20, 30, 40. Listed now: 10, 20, 40, 50, 600. Handed out: (35, 600].
        let allocated = allocated_since(35, 600, MAX);
        let (fresh, gone) = changes(vec![600, 10, 20, 40, 50], vec![40, 30, 20, 10], allocated);
        // 40 and 50 are inside the range (40 reused), 600 was never seen; 10 and 20 are the
        // same processes as before.
        assert_eq!(fresh, [40, 50, 600]);
        assert_eq!(gone, [30]);
        // The counter did not move: only unknown PIDs (none here) are read.
        let (fresh, gone) = changes(vec![10, 20], vec![20, 10], Allocated::Nothing);
        assert!(fresh.is_empty() && gone.is_empty());
        // A PID that is not listed is never proposed, even inside the range (a thread ID).
        let (fresh, _) = changes(vec![10], vec![10], allocated_since(10, 30, MAX));
        assert!(fresh.is_empty());
    }

    #[test]
    fn last_pid_and_socket_links_parse() {
        assert_eq!(parse_last_pid("0.00 0.01 0.05 1/123 45678\n"), Some(45678));
        assert_eq!(parse_last_pid("0.00 0.01"), None);
        assert_eq!(parse_socket_link("socket:[123456]"), Some(123456));
        assert_eq!(parse_socket_link("pipe:[123456]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
    }

    #[test]
    fn a_listener_is_found_in_the_likely_holders_and_anywhere() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        assert_eq!(listening_pids(port, [vec![me]]), [me]);
        // Not among the likely ones: found the slow way.
        assert_eq!(listening_pids(port, [vec![1]]), [me]);
        assert_eq!(listening_pids(port, []), [me]);
        drop(listener);
        assert!(listening_pids(port, [vec![me]]).is_empty());
    }

    #[test]
    fn the_same_sockets_held_by_the_same_processes_are_not_looked_up_again() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        let never = || std::iter::once_with(|| -> Vec<u32> { panic!("looked up again") });
        let mut listeners = Listeners::default();
        assert_eq!(listeners.holders(port, [vec![me]], true), [me]);
        assert_eq!(listeners.holders(port, never(), true), [me]);
        // A process may have started: looked up again.
        assert_eq!(listeners.holders(port, [vec![me]], false), [me]);
        // A last holder has exited: looked up again.
        listeners.pids = vec![read_pid_max()];
        assert_eq!(listeners.holders(port, [vec![me]], true), [me]);
        // Another socket on the port: looked up again, even with the same processes.
        drop(listener);
        let again = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert_eq!(listeners.holders(port, [vec![me]], true), [me]);
        drop(again);
        assert!(listeners.holders(port, never(), true).is_empty());
    }
}
