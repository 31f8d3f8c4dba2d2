//! Metrics scraped for real: Debian's Prometheus server (started here with its own config and
//! data directory on a free loopback port) scrapes oomtrace's metrics server — in this process,
//! and `oomtrace run --metrics` with real OOM kills — and its query API must see exactly the
//! counts that were made, with the target healthy.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use oomtrace::sink::metrics::{KillLabels, Metrics};
use oomtrace_tests::skip_unless;
use serde_json::Value;

/// A free loopback port (bound and released: Prometheus binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A plain HTTP/1.0 GET against a loopback address; returns (status, body).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn query(prom: SocketAddr, promql: &str) -> Option<Value> {
    let q: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = get(prom, &format!("/api/v1/query?query={q}"))?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// The single value of an instant query, if it has one.
fn scalar(prom: SocketAddr, promql: &str) -> Option<f64> {
    let v = query(prom, promql)?;
    let r = v["data"]["result"].as_array()?;
    r.first()?["value"][1].as_str()?.parse().ok()
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(dir: &Path, target: SocketAddr, listen: SocketAddr) -> Prometheus {
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: oomtrace\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={listen}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    Prometheus(child)
}

fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn prometheus_scrapes_the_exact_counts() {
    skip_unless!(
        Path::new("/usr/bin/prometheus").exists(),
        "prometheus not installed (Debian: apt-get install prometheus)"
    );
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"), "test"));
    // The server runs on a runtime of its own thread, as it would beside oomtrace's event loop.
    let (tx, rx) = std::sync::mpsc::channel();
    let m = metrics.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async move {
            let (addr, task) = m
                .serve("127.0.0.1:0".parse().unwrap())
                .await
                .expect("serve metrics");
            tx.send(addr).expect("send addr");
            let _ = task.await;
        });
    });
    let target = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("metrics server address");

    let pod = KillLabels {
        namespace: "oomtrace-test".into(),
        pod: "hog-pod".into(),
        container: "hog".into(),
        qos: "burstable".into(),
        scope: "container".into(),
    };
    for _ in 0..3 {
        metrics.record_kill(&pod);
    }
    metrics.record_kill(&KillLabels {
        scope: "global".into(),
        ..KillLabels::default()
    });
    metrics.record_sigkill_exit("kernel_oom");
    metrics.record_lost("ring_buffer_full", 7);

    let dir = tempfile::tempdir().expect("tempdir");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _prom = start_prometheus(dir.path(), target, listen);
    let ready = wait_until(Duration::from_secs(60), || {
        get(listen, "/-/ready").filter(|(s, _)| *s == 200)
    });
    assert!(
        ready.is_some(),
        "prometheus not ready: {}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );

    let q = r#"oomtrace_oom_kills_total{namespace="oomtrace-test",pod="hog-pod",container="hog",qos="burstable",scope="container"}"#;
    let got = wait_until(Duration::from_secs(30), || scalar(listen, q));
    assert_eq!(got, Some(3.0), "the pod's kills as Prometheus stored them");
    assert_eq!(scalar(listen, "sum(oomtrace_oom_kills_total)"), Some(4.0));

    // More kills: the next scrape sees exactly them.
    metrics.record_kill(&pod);
    metrics.record_kill(&pod);
    let got = wait_until(Duration::from_secs(30), || {
        scalar(listen, q).filter(|v| *v == 5.0)
    });
    assert_eq!(got, Some(5.0));
    assert_eq!(
        scalar(listen, r#"oomtrace_lost_events_total{reason="ring_buffer_full"}"#),
        Some(7.0)
    );
    assert_eq!(
        scalar(listen, r#"oomtrace_sigkill_exits_total{verdict="kernel_oom"}"#),
        Some(1.0)
    );
    assert_eq!(scalar(listen, "oomtrace_build_info"), Some(1.0));

    // The target is healthy: the page parsed without a scrape error.
    let (_, body) = get(listen, "/api/v1/targets").expect("targets");
    let t: Value = serde_json::from_str(&body).expect("targets json");
    let target0 = &t["data"]["activeTargets"][0];
    assert_eq!(target0["health"], "up", "{target0}");
    assert_eq!(target0["lastError"], "", "{target0}");
}

/// `oomtrace run --metrics` for real: a few real OOM kills, the page accepted by promtool, and
/// Prometheus's view of the kill counter equal to the kernel's count of the kills made.
#[test]
fn prometheus_scrapes_oomtrace_run_metrics() {
    oomtrace_tests::require_root_memcg!();
    skip_unless!(
        Path::new("/usr/bin/prometheus").exists() && Path::new("/usr/bin/promtool").exists(),
        "prometheus/promtool not installed (Debian: apt-get install prometheus)"
    );
    let _lock = oomtrace_tests::kill_lock();
    let target: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut tracer = oomtrace_tests::Tracer::start(&["--metrics", &target.to_string()]);
    let dir = tempfile::tempdir().expect("tempdir");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _prom = start_prometheus(dir.path(), target, listen);
    assert!(
        wait_until(Duration::from_secs(60), || get(listen, "/-/ready")
            .filter(|(s, _)| *s == 200))
        .is_some(),
        "prometheus not ready"
    );
    // The counter before: the series does not exist until the first kill.
    let before = scalar(listen, "sum(oomtrace_oom_kills_total)").unwrap_or(0.0);

    let cg = oomtrace_tests::TestCgroup::new("metrics", 32 * oomtrace_tests::MIB).expect("test cgroup");
    let kernel_before = oomtrace_tests::vmstat_oom_kills();
    const KILLS: usize = 3;
    for _ in 0..KILLS {
        let st = oomtrace_tests::run_hog(&["--cgroup", &cg.dir.display().to_string()]);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGKILL)
        );
    }
    assert_eq!(
        tracer.wait_count(KILLS, Duration::from_secs(20), |v| v["type"] == "oom_kill"),
        KILLS,
        "oomtrace's records of the kills"
    );
    let kernel_kills = oomtrace_tests::vmstat_oom_kills() - kernel_before;
    assert_eq!(
        kernel_kills, KILLS as u64,
        "the kernel's count (another OOM on the machine?)"
    );

    // promtool accepts the page oomtrace serves.
    let (status, page) = get(target, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    let mut child = Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Prometheus sees the counter rise by exactly the kills made (an OOM outside Kubernetes:
    // scope `other`, no pod labels).
    let want = before + KILLS as f64;
    let got = wait_until(Duration::from_secs(30), || {
        scalar(listen, "sum(oomtrace_oom_kills_total)").filter(|v| *v >= want)
    });
    assert_eq!(got, Some(want), "page:\n{page}");
    assert_eq!(
        scalar(listen, r#"sum(oomtrace_oom_kills_total{scope="other",pod=""})"#),
        Some(want)
    );
    assert_eq!(scalar(listen, "oomtrace_build_info"), Some(1.0));
    let (st, lines) = tracer.stop();
    assert!(st.success(), "oomtrace: {st}");
    oomtrace_tests::check_schema(&lines);
}
