//! nginx upstream groups. With several servers, `max_fails`/`fail_timeout` and the default
//! `proxy_next_upstream`, nginx leaves a server out for `fail_timeout` once it failed `max_fails`
//! times within `fail_timeout`; with every server out it answers 502 without any connect()
//! ("no live upstreams while connecting to upstream"). Such a 502 has no kernel event of its own
//! just before it: it is traced back to the failures that put the group's servers out.

use std::collections::{BTreeMap, VecDeque};

use crate::diagnosis::join::{Cause, CauseKind};
use crate::nginx::config::UpstreamGroup;

/// Every server of `group` was out at the time of a 502: the failures that put each out.
pub struct Down<'a> {
    pub group: &'a UpstreamGroup,
    /// Per server (as written in the group), the failures within its fail_timeout before the
    /// 502, by cause; empty for a server marked `down` in the config.
    pub servers: Vec<(String, BTreeMap<CauseKind, u64>)>,
}

/// The group whose every server worker `pid` had seen fail at least `max_fails` times within
/// `fail_timeout` before `ts_ns` (failures of any worker when the group has a shared `zone`).
/// Several such groups: the one whose servers failed last.
pub fn all_down<'a>(recent: &VecDeque<Cause>, groups: &'a [UpstreamGroup], pid: u32, ts_ns: u64) -> Option<Down<'a>> {
    let mut best: Option<(u64, Down<'a>)> = None;
    for g in groups.iter().filter(|g| !g.servers.is_empty()) {
        let mut servers = Vec::new();
        let mut last = 0;
        let mut out = true;
        for s in &g.servers {
            if s.down {
                servers.push((s.addr.clone(), BTreeMap::new()));
                continue;
            }
            let window = (s.fail_timeout_s * 1e9) as u64;
            let mut by = BTreeMap::new();
            let mut n = 0;
            for c in recent.iter().rev().take_while(|c| ts_ns.saturating_sub(c.ts_ns) <= window) {
                let mine = g.shared || c.pid == pid;
                if mine && c.ts_ns <= ts_ns && c.target.as_ref().is_some_and(|t| t.to_string() == s.addr) {
                    *by.entry(c.kind).or_insert(0) += 1;
                    n += 1;
                    last = last.max(c.ts_ns);
                }
            }
            if s.max_fails == 0 || n < s.max_fails as u64 {
                out = false;
                break;
            }
            servers.push((s.addr.clone(), by));
        }
        if out && best.as_ref().is_none_or(|(t, _)| last > *t) {
            best = Some((last, Down { group: g, servers }));
        }
    }
    best.map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::sockaddr::Target;
    use crate::nginx::config::UpstreamServer;

    fn group(shared: bool) -> Vec<UpstreamGroup> {
        let s = |a: &str| UpstreamServer { addr: a.into(), max_fails: 1, fail_timeout_s: 10.0, backup: false, down: false };
        vec![UpstreamGroup { name: "app".into(), servers: vec![s("unix:/a.sock"), s("unix:/b.sock")], shared }]
    }

    fn fail(ts_s: f64, pid: u32, path: &str, errno: i32) -> Cause {
        let target = Some(Target::UnixPath(path.as_bytes().to_vec()));
        Cause { ts_ns: (ts_s * 1e9) as u64, pid, kind: CauseKind::ConnectError(errno), target, age_ns: 0, idle_ns: 0 }
    }

    #[test]
    fn every_server_failed_within_its_fail_timeout_by_this_worker() {
        let recent: VecDeque<Cause> = [fail(1.0, 7, "/a.sock", libc::EAGAIN), fail(1.0, 7, "/b.sock", libc::ENOENT)].into();
        let g = group(false);
        let d = all_down(&recent, &g, 7, 5_000_000_000).expect("both out");
        assert_eq!(d.group.name, "app");
        assert_eq!(d.servers[1].1[&CauseKind::ConnectError(libc::ENOENT)], 1);
        assert!(all_down(&recent, &g, 7, 11_500_000_000).is_none(), "after fail_timeout the servers are back");
        assert!(all_down(&recent, &g, 8, 5_000_000_000).is_none(), "another worker counts its own failures");
        assert!(all_down(&recent, &group(true), 8, 5_000_000_000).is_some(), "unless the group has a shared zone");
        let one: VecDeque<Cause> = [fail(1.0, 7, "/a.sock", libc::EAGAIN)].into();
        assert!(all_down(&one, &g, 7, 5_000_000_000).is_none(), "one server still live");
    }
}
