//! App-server recognition: `/proc/PID/cmdline` and the config files it names.
//! Input: the arguments, one per line, then a NUL, then the text every config file read returns
//! (gunicorn `-c`, uwsgi `--ini`, php-fpm's main file and its includes).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|text: &str| {
    let (args, file) = text.split_once('\0').unwrap_or((text, ""));
    let args: Vec<String> = args.split('\n').map(str::to_string).collect();
    let comm = args.first().map(|a| a.rsplit('/').next().unwrap_or(a)).unwrap_or("");
    let comm: String = comm.chars().take(15).collect();
    let app = tracer::host::appserver::recognise(1, &comm, &args, Path::new("/srv"), &|_: &Path| Some(file.to_string()));
    let _ = format!("{app:?}");
});
