//! The host questions the state handlers ask — a target's listener and its owner, the workers
//! behind it, whether a TCP target is served on this host — with the caches that keep them cheap.
//! Every question goes through `Env`, so a recording replays the same answers.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use crate::host::appserver::AppServer;
use crate::host::env::Env;
use crate::host::listeners::{Listener, Owner};
use crate::kernel::sockaddr::Target;
use crate::state::ListenerView;

/// How often a target's worker list (listener owner + its children) is refreshed at most.
const WORKERS_EVERY_NS: u64 = 500_000_000;
/// How long a listener's owner (found by a /proc scan) is trusted.
const OWNER_TTL_NS: u64 = 10_000_000_000;
/// How long the listener serving a target is trusted when only its identity is needed (the
/// worker list): a unix sock_diag dump walks every unix socket of the host (~40 ms at 200 k
/// sockets), far too costly to repeat every WORKERS_EVERY_NS.
const LISTENER_TTL_NS: u64 = 10_000_000_000;
/// Most listen() calls remembered (a host churning through listeners must not grow it).
const LISTEN_CALLS_MAX: usize = 10_000;

/// A listen() call the tracer saw.
#[derive(Clone, Copy, Debug)]
struct ListenCall {
    pid: u32,
    fd: i32,
    backlog: i32,
}

pub struct Lookups {
    pub env: Env,
    pub somaxconn: Option<u32>,
    nstat_start: BTreeMap<String, u64>,
    /// TCP target → the local listener serving it (None: not on this host), looked up once.
    local: HashMap<SocketAddr, Option<SocketAddr>>,
    /// When each target's workers were last listed.
    workers_listed: HashMap<Target, u64>,
    /// Target → its listener (inode), for the worker list.
    serving: Expiring<Target, Option<Listener>>,
    /// Listener inode → owner: a /proc/*/fd scan, far too costly to repeat per sample on a host
    /// with many fds.
    owners: Expiring<u32, Option<Owner>>,
    /// Listener inode → the listen() call seen on it: where its owner is looked for first, and
    /// the backlog the application asked for.
    listen_calls: HashMap<u32, ListenCall>,
    /// tcp_abort_on_overflow by the pid whose network namespace was read (None: the tracer's).
    abort_on_overflow: HashMap<Option<u32>, Option<bool>>,
    /// App servers asked about, by pid (asked once each).
    apps: HashMap<u32, Option<AppServer>>,
    /// App-server masters found since the live loop last asked (it tells the kernel to report
    /// their forks, so the worker list stays exact across recycling).
    new_masters: Vec<u32>,
}

impl Lookups {
    pub fn new(mut env: Env) -> Lookups {
        let somaxconn = env.somaxconn();
        let nstat_start = env.nstat();
        Lookups {
            env,
            somaxconn,
            nstat_start,
            local: HashMap::new(),
            workers_listed: HashMap::new(),
            serving: Expiring::new(LISTENER_TTL_NS),
            owners: Expiring::new(OWNER_TTL_NS),
            listen_calls: HashMap::new(),
            new_masters: Vec::new(),
            apps: HashMap::new(),
            abort_on_overflow: HashMap::new(),
        }
    }

    pub fn now_ns(&mut self) -> u64 {
        self.env.now_ns()
    }

    /// Is `remote` served by a listener on this host? (sock_diag, cached per target)
    pub fn local_listener(&mut self, remote: SocketAddr) -> Option<SocketAddr> {
        if let Some(l) = self.local.get(&remote) {
            return *l;
        }
        let l = self.env.tcp_listener_bound(remote).map(|(bound, _)| bound);
        self.local.insert(remote, l);
        l
    }

    /// The owner of listener `inode`, looked up again at most every OWNER_TTL_NS.
    fn owner(&mut self, inode: u32, now: u64) -> Option<Owner> {
        let (env, listen) = (&mut self.env, self.listen_calls.get(&inode).map(|c| (c.pid, c.fd)));
        self.owners.get_or_insert_with(inode, now, || env.owner_of(inode, listen))
    }

    /// A fresh view of listener `l` sampled at `now`: its owner (reused from `prev` while the
    /// socket is the same) and the backlog its owner asked for.
    pub fn listener_view(&mut self, l: Listener, prev: Option<&ListenerView>, now: u64) -> ListenerView {
        let owner = self.owner(l.inode, now);
        let seen = self.listen_calls.get(&l.inode).map(|c| c.backlog);
        ListenerView::new(l, prev, seen, |_| owner, self.somaxconn)
    }

    /// A listen() call by a traced process: remember the socket's backlog and who called it.
    pub fn note_listen(&mut self, pid: u32, fd: i32, backlog: i32) {
        if let Some(inode) = self.env.socket_inode(pid, fd) {
            if self.listen_calls.len() > LISTEN_CALLS_MAX {
                self.listen_calls.clear();
            }
            self.listen_calls.insert(inode, ListenCall { pid, fd, backlog });
        }
    }

    /// The processes serving `target` — its listener's owner (the app server's master) and that
    /// owner's children — when due for a refresh (at most every WORKERS_EVERY_NS per target).
    pub fn workers_of(&mut self, target: &Target) -> Option<(u32, Vec<u32>)> {
        let now = self.env.now_ns();
        if self.workers_listed.get(target).is_some_and(|&t| now.saturating_sub(t) < WORKERS_EVERY_NS) {
            return None;
        }
        self.workers_listed.insert(target.clone(), now);
        let env = &mut self.env;
        let l = self.serving.get_or_insert_with(target.clone(), now, || env.listener_for(target))?;
        let master = self.owner(l.inode, now)?.pid;
        if !self.new_masters.contains(&master) {
            self.new_masters.push(master);
        }
        Some((master, self.env.children(master)))
    }

    /// The app server `pid` is, asked once per pid.
    pub fn app_server(&mut self, pid: u32) -> Option<AppServer> {
        let env = &mut self.env;
        self.apps.entry(pid).or_insert_with(|| env.app_server(pid)).clone()
    }

    /// `net.ipv4.tcp_abort_on_overflow` in the network namespace of `pid` (a listener's owner),
    /// or of the tracer when the owner is not known; asked once per pid.
    pub fn abort_on_overflow(&mut self, pid: Option<u32>) -> Option<bool> {
        let env = &mut self.env;
        *self.abort_on_overflow.entry(pid).or_insert_with(|| env.tcp_abort_on_overflow(pid).map(|v| v != 0))
    }

    /// App-server masters found since the last call.
    pub fn take_new_masters(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.new_masters)
    }

    /// Node-wide TcpExt counters since the start.
    pub fn node_counters(&mut self) -> BTreeMap<String, u64> {
        let now = self.env.nstat();
        crate::host::netstat::delta(&self.nstat_start, &now)
    }
}

/// Answers from the host kept for `ttl_ns`; the map is emptied when it reaches 10,000 entries
/// (a host churning through listeners must not grow it without bound).
struct Expiring<K, V> {
    ttl_ns: u64,
    map: HashMap<K, (V, u64)>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Expiring<K, V> {
    fn new(ttl_ns: u64) -> Self {
        Expiring { ttl_ns, map: HashMap::new() }
    }

    /// The kept answer for `key` if younger than the TTL at `now_ns`, else a fresh one from `ask`.
    fn get_or_insert_with(&mut self, key: K, now_ns: u64, ask: impl FnOnce() -> V) -> V {
        if let Some((v, at)) = self.map.get(&key) {
            if now_ns.saturating_sub(*at) < self.ttl_ns {
                return v.clone();
            }
        }
        let v = ask();
        if self.map.len() >= 10_000 {
            self.map.clear();
        }
        self.map.insert(key, (v.clone(), now_ns));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::Expiring;

    #[test]
    fn expiring_answers_are_asked_again_after_their_ttl_and_the_map_stays_bounded() {
        let mut e: Expiring<u32, u32> = Expiring::new(10);
        let asked = std::cell::Cell::new(0);
        let ask = |v| {
            asked.set(asked.get() + 1);
            v
        };
        assert_eq!(e.get_or_insert_with(1, 100, || ask(7)), 7);
        assert_eq!(e.get_or_insert_with(1, 109, || ask(8)), 7, "kept within the TTL");
        assert_eq!(e.get_or_insert_with(1, 110, || ask(9)), 9, "asked again at the TTL");
        assert_eq!(asked.get(), 2);
        for k in 0..25_000 {
            e.get_or_insert_with(k, 200, || k);
        }
        assert!(e.map.len() <= 10_000);
    }
}
