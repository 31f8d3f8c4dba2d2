//! Kubernetes: a real containerd (Debian's 1.6, CRI plugin built in) and runc, started by the
//! test; a pod and a container created through CRI the way kubelet creates them (cgroupfs
//! driver, `kubepods/burstable/pod<uid>` cgroup parent under the test's own memory cgroup, an
//! image built locally with umoci); the container's hog OOM-killed by its memory limit; and
//! oomtrace's identity parsing and name service checked against what the runtime knows, also
//! after the container is gone and with no runtime at all (kubelet's /var/log/pods layout).
//!
//! The deploy/ checks are here too: the image build script's image run by that containerd, the
//! DaemonSet manifest against `kubernetes-validate --strict`, the rsyslog and syslog-ng examples
//! against the daemons' own syntax checks, and rsyslog run for real on a live oomtrace stream.

#[path = "../src/cri.rs"]
mod cri;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use oomtrace::enrich::kube::{
    CgroupDriver, CgroupIdentity, Level, QosClass, Runtime, Scope,
    names::{self, NameService, NameSource},
};
use oomtrace_tests::{
    MIB as MIB_U64, TestCgroup, Tracer, bin, check_schema, kill_lock, own_memcg_path, require_root_memcg,
    run_hog, skip_unless, vmstat_oom_kills,
};
use serde_json::Value;

const MIB: i64 = 1 << 20;

fn uuid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("random uuid")
        .trim()
        .to_owned()
}

/// The workspace root (deploy/ lives there).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A short temporary directory: unix socket paths must stay under 108 bytes. Kept (for
/// containerd's log) when OOMTRACE_TEST_KEEP is set.
fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("oomtrace-k8s-")
        .disable_cleanup(std::env::var_os("OOMTRACE_TEST_KEEP").is_some())
        .tempdir_in("/tmp")
        .expect("tempdir")
}

/// A free loopback port (bound and released: oomtrace binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The body of a plain HTTP GET on a loopback address.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").expect("write request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read response");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    body.to_owned()
}

/// containerd up with both test images imported.
fn containerd_with_images(tmp: &Path) -> cri::Containerd {
    let ctrd = cri::Containerd::start(&tmp.join("ctrd")).unwrap_or_else(|e| panic!("containerd: {e}"));
    let img = tmp.join("img");
    fs::create_dir_all(&img).expect("mkdir img");
    // The sandbox ("pause") container only has to stay up until it is told to stop.
    cri::build_image(
        &img.join("pause"),
        "3.6",
        &[],
        &[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM INT; while :; do sleep 1; done",
        ],
    );
    ctrd.import(&img.join("pause"), "registry.k8s.io/pause");
    let hog = cri::with_libraries(&bin("oomtrace-hog"), "/oomtrace-hog");
    cri::build_image(&img.join("hog"), "test", &hog, &["/oomtrace-hog"]);
    ctrd.import(&img.join("hog"), "localhost/oomtrace-hog");
    ctrd
}

#[test]
fn containerd_pod_is_named_over_cri_and_after_it_is_gone() {
    require_root_memcg!();
    if let Some(why) = cri::missing_tools() {
        skip_unless!(false, why);
    }
    let (version, _) = oomtrace_tests::memory_hierarchy().expect("memory hierarchy");
    skip_unless!(
        version == 1,
        "the kubelet-style tree is built for cgroup v1 here (v2 needs +memory delegated down it)"
    );
    let _lock = kill_lock();
    let tmp = short_tempdir();
    // kubelet's layout, under a directory of this test's own (removed after containerd and
    // everything it ran: dropped last).
    let top = format!(
        "{}/oomtrace-kube-{}",
        own_memcg_path(version).trim_end_matches('/'),
        std::process::id()
    );
    let _cgroups = cri::CgroupTree::new(&top);
    let mut ctrd = containerd_with_images(tmp.path());
    let uid = uuid();
    let pod = cri::PodSpec {
        namespace: "oomtrace-test".into(),
        name: "hog-pod".into(),
        uid: uid.clone(),
        cgroup_parent: format!("{top}/kubepods/burstable/pod{uid}"),
        log_directory: tmp
            .path()
            .join(format!("var/log/pods/oomtrace-test_hog-pod_{uid}")),
    };

    // oomtrace itself, naming pods from this containerd and serving metrics.
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let socket = ctrd.socket.display().to_string();
    let mut tracer = Tracer::start(&["--cri-socket", &socket, "--metrics", &metrics_addr]);

    let rt = runtime();
    let (id, pod_kill) = rt.block_on(async {
        let mut c = cri::connect(&ctrd.socket).await;
        let sandbox = cri::run_pod(&mut c, &pod).await;
        let before = vmstat_oom_kills();
        let id = cri::run_container(
            &mut c,
            &sandbox,
            &pod,
            "hog",
            cri::HOG_IMAGE,
            &["/oomtrace-hog", "--mb", "512"],
            64 * MIB,
        )
        .await;
        let (code, reason) = cri::wait_exit(&mut c, &id, Duration::from_secs(60)).await;
        assert_eq!(
            (code, reason.as_str()),
            (137, "OOMKilled"),
            "containerd's view of the hog's end"
        );
        assert!(vmstat_oom_kills() > before, "the kernel counted no OOM kill");

        // The container's cgroup is the parent plus its ID (containerd's cgroupfs naming).
        let path = format!("{}/{id}", pod.cgroup_parent);
        let ident = CgroupIdentity::parse(&path);
        assert_eq!(ident.pod_uid(), Some(uid.as_str()));
        assert_eq!(ident.pod.as_ref().and_then(|p| p.qos), Some(QosClass::Burstable));
        assert_eq!(ident.container.as_ref().map(|c| c.id.as_str()), Some(id.as_str()));
        assert_eq!(ident.driver, Some(CgroupDriver::Cgroupfs));
        assert_eq!(ident.level, Some(Level::Container));
        assert_eq!(Scope::of_memcg(&path), Scope::Container);
        assert_eq!(Scope::of_memcg(&pod.cgroup_parent), Scope::Pod);

        let svc = NameService::spawn(names::Config {
            socket: Some(ctrd.socket.clone()),
            root: tmp.path().to_owned(),
            refresh: Duration::from_millis(300),
            keep: Duration::from_secs(300),
        });
        let n = svc
            .resolve(&ident, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no names for {path}: {:?}", svc.status()));
        assert_eq!(n.namespace, "oomtrace-test");
        assert_eq!(n.pod, "hog-pod");
        assert_eq!(n.container.as_deref(), Some("hog"));
        assert_eq!(n.runtime, Some(Runtime::Containerd));
        assert_eq!(n.source, NameSource::Cri);
        eprintln!("image as containerd 1.6 lists it: {:?}", n.image);
        let st = svc.status();
        assert_eq!(st.socket.as_deref(), Some(ctrd.socket.as_path()));
        assert_eq!(st.runtime_name.as_deref(), Some("containerd"));
        // The pod level, as a pod-level OOM memcg would be looked up.
        let pod_ident = CgroupIdentity::parse(&pod.cgroup_parent);
        assert_eq!(svc.lookup(&pod_ident).map(|n| n.pod), Some("hog-pod".into()));

        // The second pod: a pod-level limit (kubelet sets it on the pod's cgroup from the sum of
        // its containers' limits) and two containers without limits of their own: the hog fills
        // the pod, and the pod's limit fires.
        let uid2 = uuid();
        let pod2 = cri::PodSpec {
            namespace: "oomtrace-test".into(),
            name: "pod-limit".into(),
            uid: uid2.clone(),
            cgroup_parent: format!("{top}/kubepods/burstable/pod{uid2}"),
            log_directory: tmp
                .path()
                .join(format!("var/log/pods/oomtrace-test_pod-limit_{uid2}")),
        };
        let (_, mount) = oomtrace_tests::memory_hierarchy().expect("memory hierarchy");
        let pod2_dir = mount.join(pod2.cgroup_parent.trim_start_matches('/'));
        fs::create_dir_all(&pod2_dir).expect("mkdir the pod's cgroup");
        fs::write(pod2_dir.join("memory.limit_in_bytes"), (48 * MIB).to_string()).expect("pod limit");
        let sandbox2 = cri::run_pod(&mut c, &pod2).await;
        let sidecar = cri::run_container(
            &mut c,
            &sandbox2,
            &pod2,
            "sidecar",
            cri::HOG_IMAGE,
            &["/bin/sleep", "600"],
            0,
        )
        .await;
        let hog2 = cri::run_container(
            &mut c,
            &sandbox2,
            &pod2,
            "hog",
            cri::HOG_IMAGE,
            &["/oomtrace-hog", "--mb", "512"],
            0,
        )
        .await;
        let (code, reason) = cri::wait_exit(&mut c, &hog2, Duration::from_secs(60)).await;
        assert_eq!(
            (code, reason.as_str()),
            (137, "OOMKilled"),
            "the second pod's hog"
        );
        for id in [&sidecar, &hog2] {
            cri::remove_container(&mut c, id).await;
        }
        cri::remove_pod(&mut c, &sandbox2).await;

        // deploy/image/build-oci.sh's image (from this build's binary) runs under the runtime:
        // its libraries are all there.
        let image_dir = tmp.path().join("img");
        let out = Command::new("bash")
            .arg(workspace().join("deploy/image/build-oci.sh"))
            .arg("--binary")
            .arg(bin("oomtrace"))
            .args(["--tag", "test", "--out"])
            .arg(&image_dir)
            .output()
            .expect("run build-oci.sh");
        assert!(
            out.status.success(),
            "build-oci.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ctrd.import_archive(&image_dir.join("oomtrace-oci.tar"), "localhost/oomtrace");
        let version = cri::run_container(
            &mut c,
            &sandbox,
            &pod,
            "oomtrace",
            "localhost/oomtrace:test",
            &["/usr/local/bin/oomtrace", "--version"],
            64 * MIB,
        )
        .await;
        let (code, _) = cri::wait_exit(&mut c, &version, Duration::from_secs(30)).await;
        let log = fs::read_to_string(pod.log_directory.join("oomtrace/0.log")).unwrap_or_default();
        assert_eq!(code, 0, "oomtrace --version in its image: {log}");
        assert!(
            log.contains(&format!("stdout F oomtrace {}", env!("CARGO_PKG_VERSION"))),
            "the image's oomtrace printed: {log}"
        );
        cri::remove_container(&mut c, &version).await;

        // Gone from the runtime: still named from the cache.
        cri::remove_container(&mut c, &id).await;
        cri::remove_pod(&mut c, &sandbox).await;
        let seen = svc.status().refreshes;
        assert!(svc.wait_refreshes(seen + 2, Duration::from_secs(10)).await);
        assert!(svc.status().error.is_none(), "{:?}", svc.status());
        let after = svc
            .lookup(&ident)
            .expect("names kept after the container was removed");
        assert_eq!(after.container.as_deref(), Some("hog"));
        drop(svc);
        (id, (uid2, hog2))
    });

    // oomtrace's own records of both kills.
    let kill = tracer
        .wait_for(Duration::from_secs(20), |v| {
            v["type"] == "oom_kill" && v["victim"]["kubernetes"]["container_id"] == id.as_str()
        })
        .unwrap_or_else(|| panic!("no oom_kill record for container {id}: {:?}", tracer.seen));
    let k = &kill["victim"]["kubernetes"];
    assert_eq!(k["namespace"], "oomtrace-test", "{kill}");
    assert_eq!(k["pod"], "hog-pod", "{kill}");
    assert_eq!(k["pod_uid"], uid.as_str(), "{kill}");
    assert_eq!(k["container"], "hog", "{kill}");
    assert_eq!(k["qos"], "burstable", "{kill}");
    assert_eq!(k["runtime"], "containerd", "{kill}");
    assert_eq!(k["image"], cri::HOG_IMAGE, "{kill}");
    assert_eq!(k["names_source"], "cri", "{kill}");
    assert_eq!(kill["oom_memcg"]["scope"], "container", "{kill}");
    assert_eq!(kill["oom_memcg"]["kubernetes"], *k, "{kill}");
    assert_eq!(kill["trigger"]["kubernetes"], *k, "{kill}");

    let (uid2, hog2) = pod_kill;
    let kill2 = tracer
        .wait_for(Duration::from_secs(20), |v| {
            v["type"] == "oom_kill" && v["victim"]["kubernetes"]["container_id"] == hog2.as_str()
        })
        .unwrap_or_else(|| panic!("no oom_kill record for container {hog2}: {:?}", tracer.seen));
    assert_eq!(
        kill2["oom_memcg"]["scope"], "pod",
        "the pod's limit fired: {kill2}"
    );
    let m = &kill2["oom_memcg"]["kubernetes"];
    assert_eq!(m["pod"], "pod-limit", "{kill2}");
    assert_eq!(m["pod_uid"], uid2.as_str(), "{kill2}");
    assert_eq!(
        m["container"],
        Value::Null,
        "the pod's memcg is no container's: {kill2}"
    );
    assert_eq!(kill2["victim"]["kubernetes"]["container"], "hog", "{kill2}");
    check_schema(&[kill.clone(), kill2.clone()]);

    // The metrics page counts each kill once, by pod, container, QoS and scope.
    let page = http_get(&metrics_addr, "/metrics");
    for (pod, scope) in [("hog-pod", "container"), ("pod-limit", "pod")] {
        let series = format!(
            r#"oomtrace_oom_kills_total{{namespace="oomtrace-test",pod="{pod}",container="hog",qos="burstable",scope="{scope}"}} 1"#
        );
        assert!(page.lines().any(|l| l == series), "{series} not in:\n{page}");
    }
    let (status, lines) = tracer.stop();
    assert!(status.success(), "oomtrace: {status}");
    check_schema(&lines);
    ctrd.stop();

    // No runtime at all: kubelet's log directories name the pod. containerd wrote the
    // container's log below the sandbox's log directory; the /var/log/containers link is
    // kubelet's (made here as kubelet makes it).
    let logs = tmp.path().join("var/log/containers");
    fs::create_dir_all(&logs).expect("mkdir");
    let containers = fs::read_dir(&pod.log_directory)
        .expect("pod log directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(
        containers.contains(&"hog".to_owned()),
        "containerd's log layout: {containers:?}"
    );
    rt.block_on(async {
        let svc = NameService::spawn(names::Config {
            socket: None,
            root: tmp.path().to_owned(),
            refresh: Duration::from_millis(300),
            keep: Duration::from_secs(300),
        });
        let ident = CgroupIdentity::parse(&pod.cgroup_parent);
        let n = svc
            .resolve(&ident, Duration::from_secs(5))
            .await
            .expect("names from /var/log/pods");
        assert_eq!(
            (n.namespace.as_str(), n.pod.as_str()),
            ("oomtrace-test", "hog-pod")
        );
        assert_eq!(n.source, NameSource::PodLogs);
        assert!(svc.status().socket.is_none());
    });
}

/// kubernetes-validate (PyPI), from PATH or from a venv under target/ made on first use; the
/// reason when neither can be had.
fn kubernetes_validate() -> Result<PathBuf, String> {
    if let Some(p) = cri::which("kubernetes-validate") {
        return Ok(p);
    }
    let venv = workspace().join("target/kubernetes-validate-venv");
    let exe = venv.join("bin/kubernetes-validate");
    if exe.exists() {
        return Ok(exe);
    }
    let python = cri::which("python3").ok_or("no python3 to install kubernetes-validate with")?;
    let st = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("python3 -m venv failed ({st})"));
    }
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "kubernetes-validate"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(&venv);
        return Err(format!(
            "pip install kubernetes-validate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(exe)
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn daemonset_manifest_validates_strictly() {
    let manifest = workspace().join("deploy/kubernetes/daemonset.yaml");
    assert!(manifest.exists(), "{} is missing", manifest.display());
    let exe = match kubernetes_validate() {
        Ok(e) => e,
        Err(why) => {
            skip_unless!(false, format!("kubernetes-validate unavailable: {why}"));
            return;
        }
    };
    let out = Command::new(&exe)
        .arg("--strict")
        .arg(&manifest)
        .output()
        .expect("run kubernetes-validate");
    let text = output_text(&out);
    assert!(out.status.success(), "kubernetes-validate --strict: {text}");
    // One "passed for resource KIND/NAME" line per document: every one must have been checked.
    for resource in [
        "namespace/oomtrace",
        "serviceaccount/oomtrace",
        "daemonset/oomtrace",
        "service/oomtrace-metrics",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("passed for resource {resource} "))),
            "{resource} not validated: {text}"
        );
    }
    // --strict really rejects what the schema does not know (a guard on the check itself).
    let bad = tempfile::NamedTempFile::new().expect("temp file");
    let yaml = fs::read_to_string(&manifest).expect("read manifest");
    fs::write(
        bad.path(),
        yaml.replace("      hostPID: true", "      hostPID: true\n      hostPIDs: true"),
    )
    .expect("write");
    let out = Command::new(&exe)
        .arg("--strict")
        .arg(bad.path())
        .output()
        .expect("run");
    assert!(
        !out.status.success(),
        "an unknown field passed: {}",
        output_text(&out)
    );
}

/// rsyslogd, or the reason it cannot be had.
fn rsyslogd() -> Result<PathBuf, String> {
    cri::which("rsyslogd").ok_or_else(|| "rsyslogd not installed (Debian: apt-get install rsyslog)".into())
}

/// The rsyslog example with its /var/log/oomtrace/ paths moved to `dir`, and a main config
/// that includes only it.
fn rsyslog_config(dir: &Path) -> PathBuf {
    let example = fs::read_to_string(workspace().join("deploy/shippers/rsyslog-oomtrace.conf"))
        .expect("deploy/shippers/rsyslog-oomtrace.conf");
    let example = example.replace("/var/log/oomtrace/", &format!("{}/", dir.display()));
    fs::write(dir.join("oomtrace.conf"), example).expect("write example");
    let main = dir.join("rsyslog.conf");
    fs::write(
        &main,
        format!(
            "global(workDirectory=\"{d}\")\n$IncludeConfig {d}/oomtrace.conf\n",
            d = dir.display()
        ),
    )
    .expect("write main conf");
    main
}

#[test]
fn rsyslog_example_passes_rsyslogd_check() {
    let rsyslogd = match rsyslogd() {
        Ok(r) => r,
        Err(why) => {
            skip_unless!(false, why);
            return;
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(rsyslogd)
        .args(["-N1", "-f"])
        .arg(rsyslog_config(tmp.path()))
        .output()
        .expect("run rsyslogd");
    let text = output_text(&out);
    assert!(out.status.success(), "rsyslogd -N1: {text}");
    assert!(
        !text.to_lowercase().contains("error"),
        "rsyslogd -N1 reported errors: {text}"
    );
}

/// syslog-ng from PATH, or unpacked by deploy/shippers/unpack-syslog-ng.sh into target/ (Debian's
/// syslog-ng conflicts with rsyslog, so a machine has one installed at most).
fn syslog_ng() -> Result<PathBuf, String> {
    if let Some(p) = cri::which("syslog-ng") {
        return Ok(p);
    }
    let unpacked = workspace().join("target/syslog-ng/syslog-ng");
    if unpacked.exists() {
        return Ok(unpacked);
    }
    Err("syslog-ng not installed (Debian: syslog-ng-core, which conflicts with rsyslog; or run deploy/shippers/unpack-syslog-ng.sh)".into())
}

#[test]
fn syslog_ng_example_passes_syntax_check() {
    let conf = workspace().join("deploy/shippers/syslog-ng-oomtrace.conf");
    assert!(conf.exists(), "{} is missing", conf.display());
    let syslog_ng = match syslog_ng() {
        Ok(p) => p,
        Err(why) => {
            skip_unless!(false, why);
            return;
        }
    };
    // The example is a conf.d snippet: a main file gives it the version pragma.
    let tmp = tempfile::tempdir().expect("tempdir");
    let main = tmp.path().join("syslog-ng.conf");
    fs::write(
        &main,
        format!("@version: 3.38\n@include \"{}\"\n", conf.display()),
    )
    .expect("write");
    let out = Command::new(&syslog_ng)
        .args(["--syntax-only", "-f"])
        .arg(&main)
        .output()
        .expect("run syslog-ng");
    assert!(
        out.status.success(),
        "syslog-ng --syntax-only: {}",
        output_text(&out)
    );
    // And the check is real: a misspelt parser fails it.
    let bad = tmp.path().join("bad.conf");
    fs::write(
        &bad,
        fs::read_to_string(&conf)
            .unwrap()
            .replace("json-parser", "json-parsre"),
    )
    .unwrap();
    fs::write(&main, format!("@version: 3.38\n@include \"{}\"\n", bad.display())).unwrap();
    let out = Command::new(&syslog_ng)
        .args(["--syntax-only", "-f"])
        .arg(&main)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a broken config passed: {}",
        output_text(&out)
    );
}

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_line(path: &Path, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .find(|l| pred(l))
        {
            return Some(l.to_owned());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The rsyslog example run for real: oomtrace writes its stream to a file, a real OOM kill
/// happens, and rsyslogd (imfile + mmjsonparse, as configured in deploy/) writes the kill line
/// with the victim's comm and pid.
#[test]
fn rsyslog_ships_a_live_kill() {
    require_root_memcg!();
    let rsyslogd = match rsyslogd() {
        Ok(r) => r,
        Err(why) => {
            skip_unless!(false, why);
            return;
        }
    };
    let _lock = kill_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let events = tmp.path().join("events.jsonl");
    let kills = tmp.path().join("kills.log");
    let main = rsyslog_config(tmp.path());
    let _oomtrace = Reaped(
        Command::new(bin("oomtrace"))
            .args(["run", "--host", "rsyslog-test", "--output"])
            .arg(&events)
            .stdout(Stdio::null())
            .spawn()
            .expect("start oomtrace"),
    );
    assert!(
        wait_for_line(&events, Duration::from_secs(30), |l| l
            .contains(r#""type":"start""#))
        .is_some(),
        "oomtrace wrote no start record"
    );
    let _rsyslog = Reaped(
        Command::new(rsyslogd)
            .args(["-n", "-f"])
            .arg(&main)
            .arg("-i")
            .arg(tmp.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsyslogd"),
    );
    let cg = TestCgroup::new("rsyslog", 32 * MIB_U64).expect("test cgroup");
    let status = run_hog(&["--cgroup", &cg.dir.display().to_string()]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let kill = wait_for_line(&events, Duration::from_secs(10), |l| {
        l.contains(r#""type":"oom_kill""#) && l.contains(&cg.path)
    })
    .unwrap_or_else(|| {
        panic!(
            "oomtrace recorded no oom_kill in {}: {}",
            cg.path,
            fs::read_to_string(&events).unwrap_or_default()
        )
    });
    let record: serde_json::Value = serde_json::from_str(&kill).expect("JSON record");
    let pid = record["victim"]["pid"].as_u64().expect("victim pid");
    let line = wait_for_line(&kills, Duration::from_secs(15), |l| {
        l.contains(&format!(" pid={pid} "))
    })
    .unwrap_or_else(|| {
        panic!(
            "rsyslog wrote no kill line for pid {pid}: {:?}",
            fs::read_to_string(&kills).unwrap_or_default()
        )
    });
    assert!(
        line.contains(" rsyslog-test oom_kill victim=oomtrace-hog "),
        "{line}"
    );
    assert!(line.contains(&format!("memcg={}", cg.path)), "{line}");
    assert!(line.contains(&format!("seq={}", record["seq"])), "{line}");
}
