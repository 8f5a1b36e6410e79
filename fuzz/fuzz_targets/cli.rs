//! The command line (every value parser: durations, ring-buffer size, what-if changes, …) and
//! the validated config built from it. Input: the arguments after `tracer`, one per line.
#![no_main]
use clap::Parser;
use libfuzzer_sys::fuzz_target;
use tracer::cli::{Cli, Command};
use tracer::config::{DiagnoseConfig, TraceConfig};

fuzz_target!(|text: &str| {
    let args = std::iter::once("tracer").chain(text.split('\n'));
    let Ok(cli) = Cli::try_parse_from(args) else { return };
    let _ = match &cli.command {
        Command::Watch(a) => TraceConfig::watch(a).map(|_| ()),
        Command::Diagnose(a) => DiagnoseConfig::diagnose(a).map(|_| ()),
        Command::Record(a) => DiagnoseConfig::record(a).map(|_| ()),
        _ => Ok(()),
    };
});
