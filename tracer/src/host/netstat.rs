//! Node-wide TCP counters from /proc/net/netstat (what `nstat` shows): the cross-check for the
//! per-listener numbers, which the tracer attributes itself.

use std::collections::BTreeMap;

/// The TcpExt counters the tracer reports deltas of.
pub const WATCHED: &[&str] = &["ListenOverflows", "ListenDrops", "TCPSynRetrans"];

/// Parse the `TcpExt:` header/value line pair.
pub fn parse(text: &str) -> BTreeMap<String, u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return BTreeMap::new() };
    names.split_whitespace().skip(1).zip(values.split_whitespace().skip(1)).filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?))).collect()
}

/// Current values of [`WATCHED`] (missing ones are absent).
pub fn read() -> BTreeMap<String, u64> {
    let all = parse(&std::fs::read_to_string("/proc/net/netstat").unwrap_or_default());
    all.into_iter().filter(|(k, _)| WATCHED.contains(&k.as_str())).collect()
}

/// `after - before` per counter.
pub fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0)))).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_tcpext() {
        let t = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 12 13\nIpExt: A\nIpExt: 1\n";
        let m = super::parse(t);
        assert_eq!(m["ListenOverflows"], 12);
        assert_eq!(m["ListenDrops"], 13);
        let before = m.clone();
        let mut after = m;
        after.insert("ListenDrops".into(), 20);
        assert_eq!(super::delta(&before, &after)["ListenDrops"], 7);
    }
}
