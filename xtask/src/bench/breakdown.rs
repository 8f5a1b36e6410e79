//! Phase 2: where the tracer's request overhead comes from. The stack of phase 1 without upstream
//! keep-alive (every connection is new, so every hook fires per request), run untraced, with the
//! tracer's full program set, with every program attached but returning at once
//! (`TRACER_HOOKS_ONLY`: what the hook points cost by themselves), and with one hook family left
//! out at a time (`TRACER_SKIP_PROGRAMS`), in an order that rotates per repetition. What a run
//! gains when a family is left out is what that family costs.

use anyhow::Result;

use super::overhead::{Config, Stack, WRK_CONNS, WRK_THREADS};
use super::tools::{self, TracerRun};
use super::{check_interrupt, median, Ctx, Plan};

/// A way to run the proxy: untraced (`tracer_env: None`) or the tracer with this environment.
pub struct Variant {
    pub label: &'static str,
    pub tracer_env: Option<&'static [(&'static str, &'static str)]>,
}

pub const VARIANTS: [Variant; 6] = [
    Variant { label: "untraced", tracer_env: None },
    Variant { label: "tracer, every program", tracer_env: Some(&[]) },
    Variant {
        label: "every hook attached, programs return at once (what the hook points cost)",
        tracer_env: Some(&[("TRACER_HOOKS_ONLY", "1")]),
    },
    Variant {
        label: "without the syscall hooks (connect, listen, accept, writev, close)",
        tracer_env: Some(&[(
            "TRACER_SKIP_PROGRAMS",
            "connect_enter,connect_exit,listen_enter,accept_exit,status_line,close_enter",
        )]),
    },
    Variant {
        label: "without send/recv (the request state machine)",
        tracer_env: Some(&[("TRACER_SKIP_PROGRAMS", "sock_send,sock_recv")]),
    },
    Variant {
        label: "without the TCP hooks (state changes, drops, retransmits, resets, destroy)",
        tracer_env: Some(&[("TRACER_SKIP_PROGRAMS", "tcp_set_state,tcp_destroy,kfree_skb,tcp_retransmit,tcp_receive_reset")]),
    },
];

pub struct Breakdown {
    pub config: Config,
    /// Requests/s per repetition, in `VARIANTS` order.
    pub rps: Vec<Vec<f64>>,
}

impl Breakdown {
    /// Median over repetitions of each variant's req/s ÷ the untraced run of the same repetition.
    pub fn ratios(&self) -> Vec<f64> {
        (0..VARIANTS.len()).map(|i| median(&self.rps.iter().map(|r| r[i] / r[0]).collect::<Vec<_>>())).collect()
    }
}

pub fn run(ctx: &Ctx, plan: &Plan) -> Result<Vec<Breakdown>> {
    let mut out = Vec::new();
    for config in [Config { unix: false, keepalive: false }, Config { unix: true, keepalive: false }] {
        check_interrupt()?;
        let stack = Stack::start(config)?;
        let url = stack.nginx.url();
        if plan.warmup_secs > 0.0 {
            tools::wrk(&url, plan.warmup_secs, WRK_THREADS, WRK_CONNS)?;
        }
        let mut rps = Vec::new();
        for rep in 0..plan.reps {
            let mut row = vec![0.0; VARIANTS.len()];
            for k in 0..VARIANTS.len() {
                check_interrupt()?;
                let slot = (k + rep) % VARIANTS.len();
                let v = &VARIANTS[slot];
                let tracer = match v.tracer_env {
                    None => None,
                    Some(env) => {
                        Some(TracerRun::start_with_env(&ctx.tracer, &["--comm", "nginx"], stack.scratch.path("tracer.jsonl"), env)?)
                    }
                };
                let wrk = tools::wrk(&url, plan.run_secs, WRK_THREADS, WRK_CONNS);
                if let Some(t) = tracer {
                    t.stop()?;
                }
                row[slot] = wrk?.rps;
                ctx.progress(format!("  {}, rep {}, {}: {:.0} req/s", config.label(), rep + 1, v.label, row[slot]));
            }
            rps.push(row);
        }
        out.push(Breakdown { config, rps });
    }
    Ok(out)
}
