//! The in-kernel filters: only the selected processes' connects are reported, exactly.

use std::process::Command;

use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

/// `n` connect() calls to a missing unix path from a fresh python3 process, optionally moved into
/// the cgroup directory `cgroup` first.
fn connect_n(path: &str, n: u32, cgroup: Option<&std::path::Path>) {
    let py = format!(
        "import socket\nfor _ in range({n}):\n    s = socket.socket(socket.AF_UNIX)\n    try: s.connect({path:?})\n    except OSError: pass\n    s.close()\n"
    );
    let script = match cgroup {
        Some(cg) => format!("echo $$ > {}/cgroup.procs && exec python3 -c '{py}'", cg.display()),
        None => format!("exec python3 -c '{py}'"),
    };
    let st = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(st.success());
}

#[test]
fn cgroup_filter_counts_only_that_cgroup() {
    require_root();
    let cg = std::path::PathBuf::from(format!("/sys/fs/cgroup/unified/tracer-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&cg).expect("create a cgroup v2 directory");
    let path = format!("/tmp/tracer-e2e-cg-{}.sock", std::process::id());
    let tracer = Tracer::watch(TRACER, &["--comm", "*", "--cgroup", cg.to_str().unwrap()]).unwrap();
    connect_n(&path, 7, Some(&cg));
    connect_n(&path, 5, None);
    let records = tracer.stop().unwrap();
    let _ = std::fs::remove_dir(&cg);
    let t = final_target(&records, &format!("unix:{path}"));
    assert_eq!(errno_count(t, "ENOENT"), 7, "only the 7 connects made inside the cgroup: {t:?}");
}

#[test]
fn comm_filter_counts_only_that_name() {
    require_root();
    let path = format!("/tmp/tracer-e2e-comm-{}.sock", std::process::id());
    let tracer = Tracer::watch(TRACER, &["--comm", "python3"]).unwrap();
    connect_n(&path, 4, None);
    // Same path from another program name: not counted.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("exec perl -MSocket -e 'socket(S,PF_UNIX,SOCK_STREAM,0); connect(S, pack_sockaddr_un(\"{path}\"))'"))
        .status();
    let records = tracer.stop().unwrap();
    let t = final_target(&records, &format!("unix:{path}"));
    assert_eq!(errno_count(t, "ENOENT"), 4, "{t:?}");
}
