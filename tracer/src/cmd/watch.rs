//! `tracer watch`: every failed connect and cut request as it happens, and a running summary per
//! upstream, as text or JSON lines.

use std::io;

use crate::cli::WatchArgs;
use crate::cmd::live::{run_live, LiveRun};
use crate::config::TraceConfig;
use crate::host::record::Mark;
use crate::output::{jsonl::JsonLines, terminal::Terminal, Output};

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let config = TraceConfig::watch(&args)?;
    let out: Box<dyn Output> = if args.json { Box::new(JsonLines::new(io::stdout())) } else { Box::new(Terminal::new(io::stdout())) };
    let mut s = run_live(&config, LiveRun { keep_history: false, out, record: None, nginx: None, on_ready: Box::new(|| {}), hooks: None }).await?;
    s.env().mark(Mark::End);
    io::Write::flush(&mut io::stdout())?;
    Ok(())
}
