//! The in-kernel filters: only the selected processes' connects are reported, exactly.

use std::process::Command;

use tracer_e2e::*;

const TRACER: &str = env!("CARGO_BIN_EXE_tracer");

/// `n` connect() calls to a missing unix path from a fresh python3 process, optionally moved into
/// the cgroup directory `cgroup` first. Fails unless every one of them failed with ENOENT.
fn connect_n(path: &str, n: u32, cgroup: Option<&std::path::Path>) {
    let py = format!(
        "import socket, sys\nenoent = 0\nfor _ in range({n}):\n    s = socket.socket(socket.AF_UNIX)\n    try: s.connect({path:?})\n    except FileNotFoundError: enoent += 1\n    s.close()\nsys.exit(0 if enoent == {n} else 3)\n"
    );
    let script = match cgroup {
        Some(cg) => format!("echo $$ > {}/cgroup.procs && exec python3 -c '{py}'", cg.display()),
        None => format!("exec python3 -c '{py}'"),
    };
    let st = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(st.success(), "{n} connects to {path}, each failing with ENOENT: {st}");
}

#[test]
fn cgroup_filter_counts_only_that_cgroup() {
    require_root();
    let cg = std::path::PathBuf::from(format!("/sys/fs/cgroup/unified/tracer-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&cg).expect("create a cgroup v2 directory");
    let path = format!("/tmp/tracer-e2e-cg-{}.sock", std::process::id());
    let tracer = Tracer::watch(TRACER, &["--comm", "*", "--cgroup", cg.to_str().unwrap()]).unwrap();
    // The control: an unfiltered tracer, which must see all 12 (so the 5 outside the cgroup
    // were made and are visible: it is the filter that leaves them out).
    let everyone = Tracer::watch(TRACER, &["--comm", "*"]).unwrap();
    connect_n(&path, 7, Some(&cg));
    connect_n(&path, 5, None);
    let records = tracer.stop().unwrap();
    let all = everyone.stop().unwrap();
    std::fs::remove_dir(&cg).expect("remove the test's cgroup");
    let target = format!("unix:{path}");
    let t = final_target(&records, &target);
    assert_eq!(errno_count(final_target(&all, &target), "ENOENT"), 12, "unfiltered: 7 inside + 5 outside the cgroup");
    assert_eq!(errno_count(t, "ENOENT"), 7, "only the 7 connects made inside the cgroup: {t:?}");
}

#[test]
fn comm_filter_counts_only_that_name() {
    require_root();
    let path = format!("/tmp/tracer-e2e-comm-{}.sock", std::process::id());
    let tracer = Tracer::watch(TRACER, &["--comm", "python3"]).unwrap();
    // The control: an unfiltered tracer, which must see the other program's connect too.
    let everyone = Tracer::watch(TRACER, &["--comm", "*"]).unwrap();
    connect_n(&path, 4, None);
    // Same path from another program name: not counted. perl exits 0 only if its connect()
    // was made and failed with ENOENT.
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("exec perl -MSocket -e 'socket(S,PF_UNIX,SOCK_STREAM,0) or exit 2; connect(S, pack_sockaddr_un(\"{path}\")) and exit 3; exit($!{{ENOENT}} ? 0 : 4)'"))
        .status()
        .expect("run perl");
    assert!(st.success(), "perl's connect must be made and fail with ENOENT: {st}");
    let records = tracer.stop().unwrap();
    let all = everyone.stop().unwrap();
    let target = format!("unix:{path}");
    let t = final_target(&records, &target);
    assert_eq!(errno_count(final_target(&all, &target), "ENOENT"), 5, "unfiltered: 4 from python3 + 1 from perl");
    assert_eq!(errno_count(t, "ENOENT"), 4, "only python3's: {t:?}");
}
