//! Prometheus metrics: counters of OOM kills and of what surrounds them, rendered in the
//! Prometheus text format (0.0.4) by the Prometheus project's own crate, `prometheus-client`, and
//! served on `GET /metrics` by a small bounded HTTP/1.1 server.
//!
//! Few labels by design: namespace, pod, container, QoS class and scope for kills — never a
//! pid, a container ID or a cgroup path, which would make a new series per restart. Series of
//! pods that are gone are expired ([`Metrics::expire`]), so a node that runs many short-lived
//! pods does not accumulate series.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinHandle,
};

use crate::event::{Constraint, Kubernetes, OomKill, Scope};

/// The labels of a kill (and of a memcg OOM without one). Empty values mean "not known" or "not
/// Kubernetes"; Prometheus treats an empty label as an absent one.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KillLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// guaranteed | burstable | besteffort, or empty.
    pub qos: String,
    /// Which limit fired: container | pod | qos | node | global | other.
    pub scope: String,
}

impl KillLabels {
    /// The labels of an OOM: which limit fired and the victim's pod and container (the
    /// `victim.kubernetes` object of its `oom_kill` record).
    pub fn new(scope: Scope, victim: Option<&Kubernetes>) -> Self {
        let text = |f: fn(&Kubernetes) -> Option<&String>| victim.and_then(f).cloned().unwrap_or_default();
        Self {
            namespace: text(|k| k.namespace.as_ref()),
            pod: text(|k| k.pod.as_ref()),
            container: text(|k| k.container.as_ref()),
            qos: victim
                .and_then(|k| k.qos)
                .map(|q| q.as_str().to_owned())
                .unwrap_or_default(),
            scope: scope.as_str().to_owned(),
        }
    }

    /// The same OOM with its pod-specific labels dropped: where series beyond
    /// [`MAX_POD_SERIES`] are counted.
    fn folded(&self) -> Self {
        Self {
            qos: self.qos.clone(),
            scope: self.scope.clone(),
            ..Self::default()
        }
    }
}

/// Which limit an `oom_kill` record's OOM hit: `oom_memcg.scope`, or `global` without a memcg
/// (`other` for cpuset / mempolicy OOMs and memcgs without a known path).
pub fn scope_of_kill(k: &OomKill) -> Scope {
    match &k.oom_memcg {
        Some(m) => m
            .scope
            .or_else(|| m.path.as_deref().map(Scope::of_memcg))
            .unwrap_or(Scope::Other),
        None if k.constraint == Constraint::Global => Scope::Global,
        None => Scope::Other,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    kernel: String,
}

/// How long a pod's series stays after its last increment once its pod is gone.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);

/// Most label sets with a pod in each kill family; later pods are counted without their pod
/// labels (a bound on memory and on the scrape's size).
pub const MAX_POD_SERIES: usize = 5_000;

/// Which family a tracked series belongs to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Kind {
    Kill,
    MemcgOom,
}

/// oomtrace's metrics. Shared with the HTTP server through an `Arc`; every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    oom_kills: Family<KillLabels, Counter>,
    memcg_ooms_without_kill: Family<KillLabels, Counter>,
    sigkill_exits: Family<VerdictLabels, Counter>,
    lost: Family<ReasonLabels, Counter>,
    /// When each pod-labelled series last went up.
    touched: Mutex<HashMap<(Kind, KillLabels), Instant>>,
    ttl: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// `version` is oomtrace's, `kernel` the running kernel's release.
    pub fn new(version: &str, kernel: &str) -> Self {
        Self::with_ttl(version, kernel, DEFAULT_TTL)
    }

    pub fn with_ttl(version: &str, kernel: &str, ttl: Duration) -> Self {
        let mut registry = Registry::default();
        let oom_kills = Family::<KillLabels, Counter>::default();
        // `register` appends `_total` to counters.
        registry.register(
            "oomtrace_oom_kills",
            "OOM kills, by the victim's namespace, pod, container and QoS class, and by which limit fired (scope)",
            oom_kills.clone(),
        );
        let memcg_ooms_without_kill = Family::<KillLabels, Counter>::default();
        registry.register(
            "oomtrace_memcg_ooms_without_kill",
            "Memory cgroup OOMs that killed nothing (the OOM killer disabled, or nothing killable)",
            memcg_ooms_without_kill.clone(),
        );
        let sigkill_exits = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "oomtrace_sigkill_exits",
            "Processes that died of SIGKILL, by who killed them (verdict: kernel_oom, process, kernel_other, unknown)",
            sigkill_exits.clone(),
        );
        let lost = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "oomtrace_lost_events",
            "Records lost before they became events, by reason",
            lost.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "oomtrace_build_info",
            "oomtrace's version and the kernel it runs on; always 1",
            build.clone(),
        );
        build
            .get_or_create(&BuildLabels {
                version: version.to_owned(),
                kernel: kernel.to_owned(),
            })
            .set(1);
        Self {
            registry,
            oom_kills,
            memcg_ooms_without_kill,
            sigkill_exits,
            lost,
            touched: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn bump(&self, kind: Kind, labels: &KillLabels) {
        let family = match kind {
            Kind::Kill => &self.oom_kills,
            Kind::MemcgOom => &self.memcg_ooms_without_kill,
        };
        if labels.pod.is_empty() && labels.container.is_empty() && labels.namespace.is_empty() {
            family.get_or_create(labels).inc();
            return;
        }
        let mut touched = lock(&self.touched);
        let key = (kind, labels.clone());
        let known = touched.contains_key(&key);
        if !known && touched.keys().filter(|(k, _)| *k == kind).count() >= MAX_POD_SERIES {
            drop(touched);
            family.get_or_create(&labels.folded()).inc();
            return;
        }
        touched.insert(key, Instant::now());
        family.get_or_create(labels).inc();
    }

    /// One OOM kill (one per kernel kill: `/proc/vmstat` oom_kill counts the same).
    pub fn record_kill(&self, labels: &KillLabels) {
        self.bump(Kind::Kill, labels);
    }

    /// One memory cgroup OOM that killed nothing.
    pub fn record_memcg_oom_without_kill(&self, labels: &KillLabels) {
        self.bump(Kind::MemcgOom, labels);
    }

    /// One SIGKILL death and its verdict (the `exit` event's `verdict`, e.g. "kernel_oom").
    pub fn record_sigkill_exit(&self, verdict: &'static str) {
        self.sigkill_exits
            .get_or_create(&VerdictLabels {
                verdict: verdict.to_owned(),
            })
            .inc();
    }

    /// `count` records lost for `reason` (the `lost` event's `reason` and `count`).
    pub fn record_lost(&self, reason: &'static str, count: u64) {
        self.lost
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc_by(count);
    }

    /// Removes the pod series that went up last more than the TTL ago and whose pod
    /// `pod_is_live(namespace, pod)` says is gone (pass `|_, _| false` when nothing knows:
    /// then every pod series expires a TTL after its last increment). Returns how many went.
    pub fn expire(&self, now: Instant, pod_is_live: impl Fn(&str, &str) -> bool) -> usize {
        let mut touched = lock(&self.touched);
        let mut gone = 0;
        touched.retain(|(kind, labels), last| {
            if now.saturating_duration_since(*last) <= self.ttl || pod_is_live(&labels.namespace, &labels.pod)
            {
                return true;
            }
            match kind {
                Kind::Kill => self.oom_kills.remove(labels),
                Kind::MemcgOom => self.memcg_ooms_without_kill.remove(labels),
            };
            gone += 1;
            false
        });
        gone
    }

    /// The metrics page, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut page = String::new();
        prometheus_text::encode(&mut page, &self.registry).expect("formatting into a String cannot fail");
        page
    }

    /// Serves `GET /metrics` on `addr` until the returned task is aborted. Binding happens
    /// before this returns, so a taken port is an error here; the bound address (port 0 picks
    /// one) is returned.
    pub async fn serve(self: Arc<Self>, addr: SocketAddr) -> io::Result<(SocketAddr, JoinHandle<()>)> {
        self.serve_with_timeout(addr, CONNECTION_TIMEOUT).await
    }

    async fn serve_with_timeout(
        self: Arc<Self>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<(SocketAddr, JoinHandle<()>)> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                // Wait for a free slot before accepting: excess clients wait in the kernel's
                // backlog instead of in memory.
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        log::debug!("metrics: accept failed: {e}");
                        // EMFILE and friends: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let me = self.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(timeout, me.answer(stream)).await;
                    drop(permit);
                });
            }
        });
        Ok((local, task))
    }

    /// Reads one request and answers it; the connection is closed after the answer.
    async fn answer(&self, mut stream: TcpStream) -> io::Result<()> {
        let mut buf = [0u8; MAX_REQUEST_BYTES];
        let mut len = 0;
        let head_end = loop {
            if let Some(i) = find_head_end(&buf[..len]) {
                break i;
            }
            if len == buf.len() {
                return respond(
                    &mut stream,
                    "431 Request Header Fields Too Large",
                    "text/plain",
                    b"",
                    true,
                )
                .await;
            }
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                return Ok(());
            }
            len += n;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]);
        let mut parts = head.lines().next().unwrap_or_default().split(' ');
        let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let path = target.split('?').next().unwrap_or_default();
        match (method, path) {
            ("GET" | "HEAD", "/metrics") => {
                let page = self.render();
                respond(
                    &mut stream,
                    "200 OK",
                    prometheus_text::CONTENT_TYPE,
                    page.as_bytes(),
                    method == "GET",
                )
                .await
            }
            ("GET" | "HEAD", "/") => {
                let body = b"oomtrace: metrics are at /metrics\n";
                respond(
                    &mut stream,
                    "200 OK",
                    "text/plain; charset=utf-8",
                    body,
                    method == "GET",
                )
                .await
            }
            ("GET" | "HEAD", _) => {
                respond(&mut stream, "404 Not Found", "text/plain", b"not found\n", true).await
            }
            _ => {
                respond(
                    &mut stream,
                    "405 Method Not Allowed",
                    "text/plain",
                    b"only GET and HEAD\n",
                    true,
                )
                .await
            }
        }
    }
}

/// At most this many scrapes are answered at once.
pub const MAX_CONNECTIONS: usize = 8;
/// A connection gets this long to send its request and take the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read (Prometheus sends ~250 bytes).
pub const MAX_REQUEST_BYTES: usize = 8 << 10;

fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| b.windows(2).position(|w| w == b"\n\n"))
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    send_body: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if send_body {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::event::{NameSource, QosClass, Runtime};

    const UID: &str = "6a3c2b1e-9f4d-4c2a-8e7b-1d2c3b4a5f60";
    const ID: &str = "3f1c9e7a5b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e";

    fn pod_labels(pod: &str) -> KillLabels {
        KillLabels {
            namespace: "shop".into(),
            pod: pod.into(),
            container: "nginx".into(),
            qos: "burstable".into(),
            scope: "container".into(),
        }
    }

    fn sample(page: &str, prefix: &str) -> Option<f64> {
        page.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn labels_from_the_victims_kubernetes_object() {
        let k = Kubernetes {
            namespace: Some("shop".into()),
            pod: Some("web-0".into()),
            pod_uid: Some(UID.into()),
            qos: Some(QosClass::Burstable),
            container: Some("nginx".into()),
            container_id: Some(ID.into()),
            image: Some("nginx:1.27".into()),
            runtime: Some(Runtime::Containerd),
            names_source: Some(NameSource::Cri),
        };
        let l = KillLabels::new(Scope::Pod, Some(&k));
        assert_eq!(
            l,
            KillLabels {
                namespace: "shop".into(),
                pod: "web-0".into(),
                container: "nginx".into(),
                qos: "burstable".into(),
                scope: "pod".into(),
            }
        );
        let plain = KillLabels::new(Scope::Global, None);
        assert_eq!(plain.scope, "global");
        assert_eq!((plain.pod.as_str(), plain.qos.as_str()), ("", ""));
    }

    #[test]
    fn renders_counters_without_forbidden_labels() {
        let m = Metrics::new("0.1.0", "6.18.0");
        m.record_kill(&pod_labels("web-0"));
        m.record_kill(&pod_labels("web-0"));
        m.record_kill(&KillLabels {
            scope: "global".into(),
            ..Default::default()
        });
        m.record_memcg_oom_without_kill(&pod_labels("web-1"));
        m.record_sigkill_exit("kernel_oom");
        m.record_lost("ring_buffer_full", 3);
        m.record_lost("ring_buffer_full", 2);
        let page = m.render();
        assert!(page.contains("# TYPE oomtrace_oom_kills_total counter"), "{page}");
        assert_eq!(
            sample(
                &page,
                r#"oomtrace_oom_kills_total{namespace="shop",pod="web-0",container="nginx",qos="burstable",scope="container"}"#
            ),
            Some(2.0),
            "{page}"
        );
        assert_eq!(
            sample(&page, r#"oomtrace_lost_events_total{reason="ring_buffer_full"}"#),
            Some(5.0)
        );
        assert_eq!(
            sample(&page, r#"oomtrace_sigkill_exits_total{verdict="kernel_oom"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&page, r#"oomtrace_build_info{version="0.1.0",kernel="6.18.0"}"#),
            Some(1.0)
        );
        assert!(page.contains("oomtrace_memcg_ooms_without_kill_total{"), "{page}");
        for forbidden in ["pid=", "container_id=", "path=", "cgroup="] {
            assert!(!page.contains(forbidden), "{forbidden} in {page}");
        }
    }

    #[test]
    fn pod_series_expire_after_the_ttl_once_the_pod_is_gone() {
        let ttl = Duration::from_secs(600);
        let m = Metrics::with_ttl("0.1.0", "6.18.0", ttl);
        m.record_kill(&pod_labels("web-0"));
        m.record_kill(&pod_labels("web-1"));
        m.record_kill(&KillLabels {
            scope: "node".into(),
            ..Default::default()
        });
        let now = Instant::now();
        assert_eq!(m.expire(now, |_, _| false), 0, "within the TTL");
        let later = now + ttl + Duration::from_secs(1);
        // web-1 is still running: it stays.
        assert_eq!(m.expire(later, |_, pod| pod == "web-1"), 1);
        let page = m.render();
        assert!(!page.contains(r#"pod="web-0""#), "{page}");
        assert!(page.contains(r#"pod="web-1""#), "{page}");
        // Series without a pod never expire.
        assert!(page.contains(r#"scope="node""#), "{page}");
    }

    #[test]
    fn pod_series_are_bounded() {
        let m = Metrics::new("0.1.0", "6.18.0");
        for i in 0..MAX_POD_SERIES + 10 {
            m.record_kill(&pod_labels(&format!("p{i}")));
        }
        let page = m.render();
        let series = page
            .lines()
            .filter(|l| l.starts_with("oomtrace_oom_kills_total{"))
            .count();
        assert_eq!(series, MAX_POD_SERIES + 1);
        assert_eq!(
            sample(
                &page,
                r#"oomtrace_oom_kills_total{namespace="",pod="",container="",qos="burstable",scope="container"}"#
            ),
            Some(10.0)
        );
    }

    /// promtool (Debian's prometheus package) checks the page the way Prometheus's own tooling
    /// lints exporters: names, types, `_total`, label syntax.
    #[test]
    fn promtool_accepts_the_page() {
        let Some(promtool) = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        else {
            eprintln!("SKIP sink::metrics: promtool not installed (Debian: apt-get install prometheus)");
            return;
        };
        let m = Metrics::new("0.1.0", "6.18.0");
        m.record_kill(&pod_labels("web-0"));
        m.record_kill(&KillLabels {
            scope: "global".into(),
            ..Default::default()
        });
        m.record_memcg_oom_without_kill(&pod_labels("web-0"));
        m.record_sigkill_exit("process");
        m.record_lost("decode_error", 1);
        let page = m.render();
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run promtool");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {}{}\n{page}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn http(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let m = Arc::new(Metrics::new("0.1.0", "6.18.0"));
        m.record_kill(&pod_labels("web-0"));
        let (addr, task) = m.clone().serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let r = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("oomtrace_oom_kills_total{"), "{r}");
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        assert!(
            http(addr, b"GET /nope HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            http(addr, b"POST /metrics HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405")
        );
        let head_only = http(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n").await;
        assert!(head_only.ends_with("\r\n\r\n"), "{head_only}");
        // A request head that never ends is cut off at the bound.
        let huge = vec![b'a'; MAX_REQUEST_BYTES + 100];
        assert!(http(addr, &huge).await.starts_with("HTTP/1.1 431"));
        // Port taken: an error at once, not later.
        assert!(m.clone().serve(addr).await.is_err());
        task.abort();
    }

    #[tokio::test]
    async fn silent_clients_are_dropped_after_the_timeout() {
        let m = Arc::new(Metrics::new("0.1.0", "6.18.0"));
        let timeout = Duration::from_millis(300);
        let (addr, task) = m
            .serve_with_timeout("127.0.0.1:0".parse().unwrap(), timeout)
            .await
            .unwrap();
        // More idle connections than slots: after the timeout they are closed and a real
        // request is answered.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 2 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let t = Instant::now();
        for mut s in idle {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.unwrap(), 0, "an idle connection was kept");
        }
        // The first slots' worth close after one timeout, the rest (from the backlog) after two.
        assert!(
            t.elapsed() < timeout * 2 + Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        assert!(
            http(addr, b"GET /metrics HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 200")
        );
        task.abort();
    }
}
