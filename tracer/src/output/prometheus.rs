//! Prometheus metrics from a session (prometheus-client): counters per upstream / listener, the
//! 5xx by cause, request latency histograms, what was lost, and which probes are attached.
//! Upstream labels are capped (the first N seen keep their name, the rest are "other").

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::diagnosis::join::Status;
use crate::diagnosis::verdict;
use crate::session::{RequestSample, View};

type Labels = Vec<(&'static str, String)>;

/// The first `max` upstream names keep their label; later ones become "other".
pub struct LabelCap {
    max: usize,
    known: HashSet<String>,
}

impl LabelCap {
    pub fn new(max: usize) -> LabelCap {
        LabelCap { max, known: HashSet::new() }
    }
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }
    pub fn label(&mut self, name: &str) -> String {
        if self.known.contains(name) {
            return name.to_string();
        }
        if self.known.len() < self.max {
            self.known.insert(name.to_string());
            return name.to_string();
        }
        "other".into()
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~105 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

pub struct Metrics {
    pub registry: Arc<Mutex<Registry>>,
    connects: Family<Labels, Counter>,
    connect_errors: Family<Labels, Counter>,
    overflows: Family<Labels, Counter>,
    closes: Family<Labels, Counter>,
    http_5xx: Family<Labels, Counter>,
    ttfb: Family<Labels, Histogram, fn() -> Histogram>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    events: Counter,
    lost: Family<Labels, Counter>,
    probes: Family<Labels, Gauge>,
    /// Totals already added, so counters advance by the difference.
    seen: HashMap<(&'static str, Labels), u64>,
    pub cap: LabelCap,
}

impl Metrics {
    pub fn new(max_upstream_labels: usize) -> Metrics {
        let mut r = Registry::with_prefix("tracer");
        let connects = Family::<Labels, Counter>::default();
        let connect_errors = Family::<Labels, Counter>::default();
        let overflows = Family::<Labels, Counter>::default();
        let closes = Family::<Labels, Counter>::default();
        let http_5xx = Family::<Labels, Counter>::default();
        let ttfb = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let events = Counter::default();
        let lost = Family::<Labels, Counter>::default();
        let probes = Family::<Labels, Gauge>::default();
        r.register("upstream_connects", "connect() calls by the proxy, per upstream", connects.clone());
        r.register(
            "upstream_connect_errors",
            "Failed connect() calls per upstream and errno (EAGAIN = unix listen queue full)",
            connect_errors.clone(),
        );
        r.register(
            "listen_overflows",
            "Connections refused or dropped at a full listen queue: unix EAGAIN per upstream, TCP SYN/ACK drops per listener",
            overflows.clone(),
        );
        r.register("upstream_closes", "Upstream connections ended by class (premature, keepalive_race, proxy_abort, idle)", closes.clone());
        r.register("http_5xx", "502/504 nginx answered, per upstream and the kernel cause they were joined to", http_5xx.clone());
        r.register("upstream_ttfb_seconds", "Upstream request sent to first response byte", ttfb.clone());
        r.register("upstream_request_duration_seconds", "Upstream request sent to last response byte", duration.clone());
        r.register("events", "Kernel events decoded", events.clone());
        r.register("events_lost", "Kernel events lost, by reason (ringbuf_full, pending_map_full, conn_map_full, …)", lost.clone());
        r.register("probe_attached", "1 when the kernel program is attached to its tracepoint", probes.clone());
        Metrics {
            registry: Arc::new(Mutex::new(r)),
            connects,
            connect_errors,
            overflows,
            closes,
            http_5xx,
            ttfb,
            duration,
            events,
            lost,
            probes,
            seen: HashMap::new(),
            cap: LabelCap::new(max_upstream_labels),
        }
    }

    /// Advance `family[labels]` to `total` (counters only move forward).
    fn to_total(seen: &mut HashMap<(&'static str, Labels), u64>, name: &'static str, family: &Family<Labels, Counter>, labels: Labels, total: u64) {
        let last = seen.entry((name, labels.clone())).or_insert(0);
        // Created even at 0, so "nothing lost" is a sample, not an absence.
        let counter = family.get_or_create(&labels);
        if total > *last {
            counter.inc_by(total - *last);
            *last = total;
        }
    }

    /// Bring the metrics up to date with the session (called after every batch) and count the
    /// 502/504s whose cause has settled and the requests completed since the last call.
    pub fn update(&mut self, s: &View, statuses: &[Status], samples: &[RequestSample]) {
        let seen = &mut self.seen;
        for t in s.state.connects.targets() {
            let up = self.cap.label(&t.target.to_string());
            Self::to_total(seen, "connects", &self.connects, vec![("upstream", up.clone())], t.connects);
            for (errno, e) in &t.errors {
                let labels = vec![("upstream", up.clone()), ("errno", crate::kernel::errno::name(*errno))];
                Self::to_total(seen, "errors", &self.connect_errors, labels, e.count);
            }
            let eagain = t.errno_count(libc::EAGAIN);
            if eagain > 0 {
                let labels = vec![("listener", up.clone()), ("kind", "unix_eagain".into())];
                Self::to_total(seen, "overflow", &self.overflows, labels, eagain);
            }
        }
        for l in s.state.tcp.listeners.values() {
            let name = self.cap.label(&l.name());
            Self::to_total(seen, "overflow", &self.overflows, vec![("listener", name.clone()), ("kind", "tcp_syn".into())], l.syn_drops);
            Self::to_total(seen, "overflow", &self.overflows, vec![("listener", name), ("kind", "tcp_ack".into())], l.ack_drops);
        }
        for (target, r) in &s.state.requests.targets {
            let up = self.cap.label(&target.to_string());
            for (class, n) in &r.closes {
                Self::to_total(seen, "closes", &self.closes, vec![("upstream", up.clone()), ("class", class.as_str().into())], *n);
            }
        }
        for st in statuses {
            let (up, cause) = match &st.cause {
                Some(c) => (c.target.as_ref().map_or("unknown".into(), |t| self.cap.label(&t.to_string())), verdict::classify(s, c).as_str()),
                None => ("unknown".into(), "unexplained"),
            };
            self.http_5xx.get_or_create(&vec![("upstream", up), ("status", st.status.to_string()), ("cause", cause.into())]).inc();
        }
        for (target, ttfb, total) in samples {
            let up = target.as_ref().map_or("unknown".into(), |t| self.cap.label(&t.to_string()));
            self.ttfb.get_or_create(&vec![("upstream", up.clone())]).observe(*ttfb as f64 / 1e9);
            self.duration.get_or_create(&vec![("upstream", up)]).observe(*total as f64 / 1e9);
        }
        let (events, lost) = (&s.events, s.lost);
        let last = seen.entry(("events", vec![])).or_insert(0);
        if *events > *last {
            self.events.inc_by(events - *last);
            *last = *events;
        }
        for (reason, n) in lost.by_reason() {
            Self::to_total(seen, "lost", &self.lost, vec![("reason", reason.into())], n);
        }
        for p in s.probes {
            self.probes.get_or_create(&vec![("program", p.program.clone()), ("tracepoint", p.tracepoint.clone())]).set(p.attached as i64);
        }
    }

    pub fn render(registry: &Mutex<Registry>) -> String {
        let mut out = String::new();
        if let Ok(r) = registry.lock() {
            let _ = encode(&mut out, &r);
        }
        out
    }
}
