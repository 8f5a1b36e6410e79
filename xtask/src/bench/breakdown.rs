//! Phase 2: where the tracer's request overhead comes from. The stack of phase 1 without upstream
//! keep-alive (every connection is new, so every hook fires per request), run untraced, with the
//! tracer's full program set, with every program attached but returning at once
//! (`TRACER_HOOKS_ONLY`: what the hook points cost by themselves), with no tracer but a bpftrace
//! probe on a syscall nothing calls (the syscall slow path alone), and with one hook family left
//! out at a time (`TRACER_SKIP_PROGRAMS`), in an order that rotates per repetition. What a run
//! gains when a family is left out is what that family costs.

use anyhow::Result;

use super::overhead::{Config, Stack, WRK_CONNS, WRK_THREADS};
use super::tools::{self, Bpftrace, TracerRun};
use super::{check_interrupt, median, Ctx, Plan};

/// How the proxy runs in a variant.
pub enum Runner {
    Untraced,
    /// The tracer with this environment.
    Tracer(&'static [(&'static str, &'static str)]),
    /// bpftrace with this script (it prints `ready` once attached).
    Bpftrace(&'static str),
}

pub struct Variant {
    pub label: &'static str,
    pub runner: Runner,
    /// A family of programs left out: its gain over the full tracer is what that family costs.
    pub leaves_out: bool,
}

/// Two syscall tracepoints nothing calls (acct(2)) with a program that never runs: what every
/// syscall of every process pays while any syscall tracepoint is enabled (the kernel then sends
/// all syscalls through its slow path). Any tool that hooks a syscall tracepoint pays it.
const SYSCALL_TAX_SCRIPT: &str = r#"
BEGIN { printf("ready\n"); }
tracepoint:syscalls:sys_enter_acct, tracepoint:syscalls:sys_exit_acct { @calls = count(); }
"#;

pub const VARIANTS: [Variant; 7] = [
    Variant { label: "untraced", runner: Runner::Untraced, leaves_out: false },
    Variant { label: "tracer, every program", runner: Runner::Tracer(&[]), leaves_out: false },
    Variant {
        label: "every hook attached, programs return at once (what the hook points cost)",
        runner: Runner::Tracer(&[("TRACER_HOOKS_ONLY", "1")]),
        leaves_out: false,
    },
    Variant {
        label: "no tracer; bpftrace on a syscall nothing calls (acct): the syscall slow path alone",
        runner: Runner::Bpftrace(SYSCALL_TAX_SCRIPT),
        leaves_out: false,
    },
    Variant {
        label: "without the syscall hooks (connect, listen, accept, writev, close)",
        runner: Runner::Tracer(&[("TRACER_SKIP_PROGRAMS", "connect_enter,connect_exit,listen_enter,accept_exit,status_line,close_enter")]),
        leaves_out: true,
    },
    Variant {
        label: "without send/recv (the request state machine)",
        runner: Runner::Tracer(&[("TRACER_SKIP_PROGRAMS", "sock_send,sock_recv")]),
        leaves_out: true,
    },
    Variant {
        label: "without the TCP hooks (state changes, drops, retransmits, resets, destroy)",
        runner: Runner::Tracer(&[("TRACER_SKIP_PROGRAMS", "tcp_set_state,tcp_destroy,kfree_skb,tcp_retransmit,tcp_receive_reset")]),
        leaves_out: true,
    },
];

/// Indexes into `VARIANTS` the report refers to.
pub const FULL: usize = 1;
pub const HOOKS_ONLY: usize = 2;
pub const SYSCALL_TAX: usize = 3;

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
        for rep in 0..plan.breakdown_reps {
            let mut row = vec![0.0; VARIANTS.len()];
            for k in 0..VARIANTS.len() {
                check_interrupt()?;
                let slot = (k + rep) % VARIANTS.len();
                let v = &VARIANTS[slot];
                let running = match v.runner {
                    Runner::Untraced => Running::Nothing,
                    Runner::Tracer(env) => {
                        Running::Tracer(TracerRun::start_with_env(&ctx.tracer, &["--comm", "nginx"], stack.scratch.path("tracer.jsonl"), env)?)
                    }
                    Runner::Bpftrace(script) => {
                        let path = stack.scratch.path(&format!("variant-{slot}.bt"));
                        std::fs::write(&path, script.trim())?;
                        Running::Bpftrace(Bpftrace::start(&path)?)
                    }
                };
                let wrk = tools::wrk(&url, plan.run_secs, WRK_THREADS, WRK_CONNS);
                match running {
                    Running::Nothing => {}
                    Running::Tracer(t) => {
                        t.stop()?;
                    }
                    Running::Bpftrace(b) => b.stop(),
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

enum Running {
    Nothing,
    Tracer(TracerRun),
    Bpftrace(Bpftrace),
}
