//! Namespace, pod, container and image names for the pod UIDs and container IDs that cgroup
//! paths carry, without the API server: a cache filled in the background from the runtime's CRI
//! socket ([`super::cri`]) and, when no runtime answers, from kubelet's log directories
//! ([`super::pod_logs`]). Entries stay for [`Config::keep`] after the runtime stopped listing
//! them, so a container that was OOM-killed and removed right away is still named.
//!
//! Lookups never wait for I/O ([`NameService::lookup`]); [`NameService::resolve`] asks for an
//! early refresh on a miss (a container that started after the last refresh) and waits for it up
//! to a bound the caller gives.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use super::{
    CgroupIdentity, Runtime,
    cri::{self, CriClient, Snapshot},
    pod_logs::{LogSnapshot, PodLogs},
};

pub use crate::event::NameSource;

/// The names of a pod and, when the cgroup was a container's, of the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Names {
    pub namespace: String,
    pub pod: String,
    /// `None` for a pod-level cgroup, or a container the source does not know.
    pub container: Option<String>,
    pub image: Option<String>,
    /// The runtime that listed the container (tells a bare cgroupfs ID's runtime).
    pub runtime: Option<Runtime>,
    pub source: NameSource,
}

#[derive(Clone, Debug)]
struct PodEntry {
    namespace: String,
    name: String,
    source: NameSource,
    seen: Instant,
}

#[derive(Clone, Debug)]
struct ContainerEntry {
    pod_uid: Option<String>,
    /// From the container's own labels (or log link), for a pod the source does not list.
    namespace: Option<String>,
    pod: Option<String>,
    name: String,
    image: Option<String>,
    runtime: Option<Runtime>,
    source: NameSource,
    seen: Instant,
}

/// The cache: pods by UID, containers by ID, each with when a source last listed it.
#[derive(Debug)]
pub struct Directory {
    pods: HashMap<String, PodEntry>,
    containers: HashMap<String, ContainerEntry>,
    keep: Duration,
}

/// Most pods and containers cached (a bound far above a node's 110 pods and their restarts).
pub const MAX_PODS: usize = 10_000;
pub const MAX_CONTAINERS: usize = 50_000;

impl Directory {
    pub fn new(keep: Duration) -> Self {
        Self {
            pods: HashMap::new(),
            containers: HashMap::new(),
            keep,
        }
    }

    pub fn len(&self) -> (usize, usize) {
        (self.pods.len(), self.containers.len())
    }

    /// Takes in a CRI snapshot: every listed pod and container is (re)stamped `now`.
    pub fn add_cri(&mut self, snap: &Snapshot, runtime: Option<Runtime>, now: Instant) {
        let mut uid_of_sandbox = HashMap::new();
        for s in &snap.sandboxes {
            uid_of_sandbox.insert(s.id.as_str(), s.uid.as_str());
            if self.pods.len() >= MAX_PODS && !self.pods.contains_key(&s.uid) {
                continue;
            }
            self.pods.insert(
                s.uid.clone(),
                PodEntry {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    source: NameSource::Cri,
                    seen: now,
                },
            );
        }
        for c in &snap.containers {
            if self.containers.len() >= MAX_CONTAINERS && !self.containers.contains_key(&c.id) {
                continue;
            }
            let pod_uid = c
                .pod_uid
                .clone()
                .or_else(|| uid_of_sandbox.get(c.sandbox_id.as_str()).map(|u| (*u).to_owned()));
            self.containers.insert(
                c.id.clone(),
                ContainerEntry {
                    pod_uid,
                    namespace: c.pod_namespace.clone(),
                    pod: c.pod_name.clone(),
                    name: c.name.clone(),
                    image: c.image.clone(),
                    runtime,
                    source: NameSource::Cri,
                    seen: now,
                },
            );
        }
    }

    /// Takes in kubelet's log directories; what the runtime listed is not overwritten.
    pub fn add_pod_logs(&mut self, snap: &LogSnapshot, now: Instant) {
        for p in &snap.pods {
            if let Some(e) = self.pods.get_mut(&p.uid) {
                if e.source == NameSource::PodLogs {
                    e.seen = now;
                }
                continue;
            }
            if self.pods.len() >= MAX_PODS {
                continue;
            }
            self.pods.insert(
                p.uid.clone(),
                PodEntry {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    source: NameSource::PodLogs,
                    seen: now,
                },
            );
        }
        // The link names carry no UID: find it from the pod directories.
        let uid_of: HashMap<(&str, &str), &str> = snap
            .pods
            .iter()
            .map(|p| ((p.namespace.as_str(), p.name.as_str()), p.uid.as_str()))
            .collect();
        for c in &snap.containers {
            if let Some(e) = self.containers.get_mut(&c.id) {
                if e.source == NameSource::PodLogs {
                    e.seen = now;
                }
                continue;
            }
            if self.containers.len() >= MAX_CONTAINERS {
                continue;
            }
            self.containers.insert(
                c.id.clone(),
                ContainerEntry {
                    pod_uid: uid_of
                        .get(&(c.namespace.as_str(), c.pod.as_str()))
                        .map(|u| (*u).to_owned()),
                    namespace: Some(c.namespace.clone()),
                    pod: Some(c.pod.clone()),
                    name: c.name.clone(),
                    image: None,
                    runtime: None,
                    source: NameSource::PodLogs,
                    seen: now,
                },
            );
        }
    }

    /// Forgets what no source listed for longer than `keep`.
    pub fn expire(&mut self, now: Instant) {
        let keep = self.keep;
        self.pods
            .retain(|_, e| now.saturating_duration_since(e.seen) <= keep);
        self.containers
            .retain(|_, e| now.saturating_duration_since(e.seen) <= keep);
    }

    /// Whether the pod is listed (or was, less than `keep` ago).
    pub fn knows_pod(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Whether a pod of that namespace and name is listed (or was, less than `keep` ago).
    pub fn knows_pod_named(&self, namespace: &str, name: &str) -> bool {
        self.pods
            .values()
            .any(|p| p.namespace == namespace && p.name == name)
    }

    /// The names for a cgroup's pod UID and container ID (either may be unknown).
    pub fn lookup(&self, pod_uid: Option<&str>, container_id: Option<&str>) -> Option<Names> {
        if let Some(c) = container_id.and_then(|id| self.containers.get(id)) {
            let pod = c.pod_uid.as_deref().or(pod_uid).and_then(|u| self.pods.get(u));
            let (namespace, pod_name) = match (pod, &c.namespace, &c.pod) {
                (Some(p), _, _) => (p.namespace.clone(), p.name.clone()),
                (None, Some(ns), Some(name)) => (ns.clone(), name.clone()),
                _ => return None,
            };
            return Some(Names {
                namespace,
                pod: pod_name,
                container: Some(c.name.clone()),
                image: c.image.clone(),
                runtime: c.runtime,
                source: c.source,
            });
        }
        let p = self.pods.get(pod_uid?)?;
        Some(Names {
            namespace: p.namespace.clone(),
            pod: p.name.clone(),
            container: None,
            image: None,
            runtime: None,
            source: p.source,
        })
    }
}

/// How the name service finds its sources.
#[derive(Clone, Debug)]
pub struct Config {
    /// The CRI socket to use; `None`: the first of [`cri::SOCKETS`] below `root`.
    pub socket: Option<PathBuf>,
    /// Where the node's filesystem is: "/" on the node, the host mount in a pod (for socket
    /// detection and kubelet's log directories).
    pub root: PathBuf,
    /// How often the runtime is asked for its lists.
    pub refresh: Duration,
    /// How long a pod or container stays named after its source stopped listing it.
    pub keep: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: None,
            root: PathBuf::from("/"),
            refresh: Duration::from_secs(5),
            keep: Duration::from_secs(5 * 60),
        }
    }
}

/// What the service is connected to, for the `start` record and for logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The CRI socket in use, when one answers.
    pub socket: Option<PathBuf>,
    pub runtime_name: Option<String>,
    pub runtime_version: Option<String>,
    /// kubelet's log directories are there.
    pub pod_logs: bool,
    /// Why the last attempt to read the runtime failed, in words.
    pub error: Option<String>,
    /// Refreshes done.
    pub refreshes: u64,
}

/// Nudged refreshes come at most this often (an OOM storm of unknown containers asks once).
const MIN_REFRESH_GAP: Duration = Duration::from_millis(200);
/// Retry a runtime that did not answer at most this often.
const RECONNECT_INTERVAL: Duration = Duration::from_secs(10);

struct Shared {
    dir: Mutex<Directory>,
    status: Mutex<Status>,
    nudge: Notify,
    refreshed: watch::Sender<u64>,
    /// The same refresh count for threads outside the runtime ([`NameService::resolve_blocking`]).
    generation: Mutex<u64>,
    generation_cv: Condvar,
}

struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A handle on the background name cache. Clones share it; the refresh task stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct NameService {
    shared: Arc<Shared>,
    _task: Arc<Task>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl NameService {
    /// Starts the refresh task on the current tokio runtime.
    pub fn spawn(cfg: Config) -> Self {
        let (refreshed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            dir: Mutex::new(Directory::new(cfg.keep)),
            status: Mutex::new(Status::default()),
            nudge: Notify::new(),
            refreshed,
            generation: Mutex::new(0),
            generation_cv: Condvar::new(),
        });
        let task = tokio::spawn(refresh_loop(cfg, Arc::downgrade(&shared)));
        Self {
            shared,
            _task: Arc::new(Task(task)),
        }
    }

    /// The cached names for a cgroup's identity; never waits.
    pub fn lookup(&self, id: &CgroupIdentity) -> Option<Names> {
        let container = id.container.as_ref().map(|c| c.id.as_str());
        lock(&self.shared.dir).lookup(id.pod_uid(), container)
    }

    /// Like [`Self::lookup`], but on a miss for a Kubernetes cgroup asks for a refresh and waits
    /// for it, up to `wait`.
    pub async fn resolve(&self, id: &CgroupIdentity, wait: Duration) -> Option<Names> {
        if let Some(n) = self.lookup(id) {
            return Some(n);
        }
        if id.pod.is_none() && id.container.is_none() {
            return None;
        }
        let mut rx = self.shared.refreshed.subscribe();
        self.shared.nudge.notify_one();
        let _ = tokio::time::timeout(wait, rx.changed()).await;
        self.lookup(id)
    }

    /// [`Self::resolve`] for a thread outside the tokio runtime (the pipeline thread): blocks it
    /// for at most `wait`.
    pub fn resolve_blocking(&self, id: &CgroupIdentity, wait: Duration) -> Option<Names> {
        if let Some(n) = self.lookup(id) {
            return Some(n);
        }
        if id.pod.is_none() && id.container.is_none() {
            return None;
        }
        let seen = *lock(&self.shared.generation);
        self.shared.nudge.notify_one();
        let guard = lock(&self.shared.generation);
        let _unused = self
            .shared
            .generation_cv
            .wait_timeout_while(guard, wait, |g| *g == seen)
            .unwrap_or_else(|e| e.into_inner());
        self.lookup(id)
    }

    /// Whether a pod is still listed (or was, less than [`Config::keep`] ago): metrics of pods
    /// that are gone can be expired.
    pub fn knows_pod(&self, uid: &str) -> bool {
        lock(&self.shared.dir).knows_pod(uid)
    }

    /// [`Self::knows_pod`] by namespace and name, as metrics labels carry them.
    pub fn knows_pod_named(&self, namespace: &str, name: &str) -> bool {
        lock(&self.shared.dir).knows_pod_named(namespace, name)
    }

    pub fn status(&self) -> Status {
        lock(&self.shared.status).clone()
    }

    /// Waits until `n` refreshes have been done (start-up: names for the first records), up to
    /// `wait`. Returns whether they were.
    pub async fn wait_refreshes(&self, n: u64, wait: Duration) -> bool {
        let mut rx = self.shared.refreshed.subscribe();
        tokio::time::timeout(wait, rx.wait_for(|g| *g >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn refresh_loop(cfg: Config, shared: std::sync::Weak<Shared>) {
    let logs = PodLogs::new(&cfg.root);
    let mut client: Option<CriClient> = None;
    let mut last_connect: Option<Instant> = None;
    let mut generation = 0u64;
    let mut nudged = false;
    loop {
        let Some(sh) = shared.upgrade() else { return };
        if client.is_none() && last_connect.is_none_or(|t| nudged || t.elapsed() >= RECONNECT_INTERVAL) {
            last_connect = Some(Instant::now());
            let socket = cfg.socket.clone().or_else(|| cri::detect_socket(&cfg.root));
            match socket {
                Some(s) => match CriClient::connect(&s).await {
                    Ok(c) => {
                        log::info!(
                            "naming pods and containers from {} ({} {}) over CRI",
                            s.display(),
                            c.runtime_name,
                            c.runtime_version
                        );
                        let mut st = lock(&sh.status);
                        st.socket = Some(s);
                        st.runtime_name = Some(c.runtime_name.clone());
                        st.runtime_version = Some(c.runtime_version.clone());
                        st.error = None;
                        client = Some(c);
                    }
                    Err(e) => note_error(&sh, format!("{e:#}")),
                },
                None => note_error(
                    &sh,
                    format!(
                        "no CRI socket found (tried {} below {})",
                        cri::SOCKETS.join(", "),
                        cfg.root.display()
                    ),
                ),
            }
        }
        let mut cri_ok = false;
        if let Some(c) = client.as_mut() {
            match c.snapshot().await {
                Ok(snap) => {
                    let runtime = c.runtime();
                    lock(&sh.dir).add_cri(&snap, runtime, Instant::now());
                    cri_ok = true;
                }
                Err(e) => {
                    note_error(&sh, format!("{e:#}"));
                    client = None;
                }
            }
        }
        let logs_present = logs.present();
        if logs_present && (!cri_ok || nudged) {
            let snap = tokio::task::spawn_blocking({
                let logs = logs.clone();
                move || logs.scan()
            })
            .await
            .unwrap_or_default();
            lock(&sh.dir).add_pod_logs(&snap, Instant::now());
        }
        lock(&sh.dir).expire(Instant::now());
        generation += 1;
        {
            let mut st = lock(&sh.status);
            st.pod_logs = logs_present;
            st.refreshes = generation;
            if !cri_ok && client.is_none() && st.socket.is_some() {
                st.socket = None;
            }
        }
        sh.refreshed.send_replace(generation);
        *lock(&sh.generation) = generation;
        sh.generation_cv.notify_all();
        let started = Instant::now();
        nudged = tokio::select! {
            () = tokio::time::sleep(cfg.refresh) => false,
            () = sh.nudge.notified() => true,
        };
        drop(sh);
        if nudged && let Some(rest) = MIN_REFRESH_GAP.checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
}

fn note_error(sh: &Shared, e: String) {
    let mut st = lock(&sh.status);
    if st.error.as_deref() != Some(e.as_str()) {
        log::debug!("container names: {e}");
    }
    st.error = Some(e);
}

#[cfg(test)]
mod tests {
    use super::{super::cri, *};

    const ID: &str = "3f1c9e7a5b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e";
    const UID: &str = "6a3c2b1e-9f4d-4c2a-8e7b-1d2c3b4a5f60";

    fn snap() -> Snapshot {
        Snapshot {
            sandboxes: vec![cri::Sandbox {
                id: "sb1".into(),
                uid: UID.into(),
                namespace: "shop".into(),
                name: "web-0".into(),
            }],
            containers: vec![cri::Container {
                id: ID.into(),
                sandbox_id: "sb1".into(),
                name: "nginx".into(),
                image: Some("nginx:1.27".into()),
                pod_uid: None,
                pod_namespace: None,
                pod_name: None,
            }],
        }
    }

    #[test]
    fn names_container_and_pod() {
        let mut d = Directory::new(Duration::from_secs(60));
        let t0 = Instant::now();
        d.add_cri(&snap(), Some(Runtime::Containerd), t0);
        let n = d.lookup(Some(UID), Some(ID)).unwrap();
        assert_eq!(
            n,
            Names {
                namespace: "shop".into(),
                pod: "web-0".into(),
                container: Some("nginx".into()),
                image: Some("nginx:1.27".into()),
                runtime: Some(Runtime::Containerd),
                source: NameSource::Cri,
            }
        );
        // Pod-level cgroup: no container.
        let n = d.lookup(Some(UID), None).unwrap();
        assert_eq!((n.pod.as_str(), n.container), ("web-0", None));
        // The container alone finds its pod through the sandbox.
        assert_eq!(d.lookup(None, Some(ID)).unwrap().namespace, "shop");
        assert_eq!(d.lookup(Some("other"), Some("nope")), None);
        assert_eq!(d.lookup(None, None), None);
    }

    #[test]
    fn kept_for_a_while_after_it_is_gone() {
        let keep = Duration::from_secs(300);
        let mut d = Directory::new(keep);
        let t0 = Instant::now();
        d.add_cri(&snap(), None, t0);
        // The runtime stops listing the container (removed after its OOM kill).
        d.add_cri(&Snapshot::default(), None, t0 + Duration::from_secs(10));
        d.expire(t0 + Duration::from_secs(200));
        assert!(d.lookup(Some(UID), Some(ID)).is_some());
        assert!(d.knows_pod(UID));
        d.expire(t0 + keep + Duration::from_secs(1));
        assert_eq!(d.lookup(Some(UID), Some(ID)), None);
        assert!(!d.knows_pod(UID));
        assert_eq!(d.len(), (0, 0));
    }

    #[test]
    fn cri_wins_over_pod_logs() {
        let mut d = Directory::new(Duration::from_secs(60));
        let t0 = Instant::now();
        d.add_cri(&snap(), None, t0);
        d.add_pod_logs(
            &LogSnapshot {
                pods: vec![super::super::pod_logs::LogPod {
                    namespace: "x".into(),
                    name: "y".into(),
                    uid: UID.into(),
                    containers: vec![],
                }],
                containers: vec![],
            },
            t0,
        );
        assert_eq!(d.lookup(Some(UID), None).unwrap().source, NameSource::Cri);
    }

    #[test]
    fn pod_logs_alone() {
        let mut d = Directory::new(Duration::from_secs(60));
        let logs = LogSnapshot {
            pods: vec![super::super::pod_logs::LogPod {
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: UID.into(),
                containers: vec!["nginx".into()],
            }],
            containers: vec![super::super::pod_logs::LogContainer {
                id: ID.into(),
                namespace: "shop".into(),
                pod: "web-0".into(),
                name: "nginx".into(),
            }],
        };
        d.add_pod_logs(&logs, Instant::now());
        let n = d.lookup(Some(UID), Some(ID)).unwrap();
        assert_eq!(n.source, NameSource::PodLogs);
        assert_eq!(n.container.as_deref(), Some("nginx"));
        assert_eq!(n.image, None);
    }

    #[test]
    fn container_labels_name_a_pod_the_runtime_does_not_list() {
        let mut d = Directory::new(Duration::from_secs(60));
        let mut s = snap();
        s.sandboxes.clear();
        s.containers[0].pod_namespace = Some("ns".into());
        s.containers[0].pod_name = Some("p".into());
        d.add_cri(&s, None, Instant::now());
        let n = d.lookup(None, Some(ID)).unwrap();
        assert_eq!((n.namespace.as_str(), n.pod.as_str()), ("ns", "p"));
    }

    #[test]
    fn bounded() {
        let mut d = Directory::new(Duration::from_secs(60));
        let now = Instant::now();
        let many = Snapshot {
            sandboxes: (0..MAX_PODS + 5)
                .map(|i| cri::Sandbox {
                    id: format!("s{i}"),
                    uid: format!("u{i}"),
                    namespace: "n".into(),
                    name: "p".into(),
                })
                .collect(),
            containers: Vec::new(),
        };
        d.add_cri(&many, None, now);
        assert_eq!(d.len().0, MAX_PODS);
    }

    #[tokio::test]
    async fn service_falls_back_to_pod_logs_and_reports_why() {
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join(format!("var/log/pods/shop_web-0_{UID}/nginx"));
        std::fs::create_dir_all(&pod).unwrap();
        let svc = NameService::spawn(Config {
            root: root.path().to_owned(),
            refresh: Duration::from_millis(50),
            ..Config::default()
        });
        assert!(svc.wait_refreshes(1, Duration::from_secs(5)).await);
        let id = CgroupIdentity::parse(&format!("/kubepods/burstable/pod{UID}"));
        let n = svc.resolve(&id, Duration::from_secs(1)).await.unwrap();
        assert_eq!((n.namespace.as_str(), n.pod.as_str()), ("shop", "web-0"));
        let st = svc.status();
        assert!(st.pod_logs);
        assert_eq!(st.socket, None);
        assert!(st.error.unwrap().contains("no CRI socket found"));
        // A pod that appears later is found by a nudged refresh.
        let uid2 = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        std::fs::create_dir_all(root.path().join(format!("var/log/pods/shop_web-1_{uid2}/app"))).unwrap();
        let id2 = CgroupIdentity::parse(&format!("/kubepods/besteffort/pod{uid2}"));
        assert_eq!(
            svc.resolve(&id2, Duration::from_secs(2)).await.unwrap().pod,
            "web-1"
        );
        // Not Kubernetes: no wait, no names.
        let t = Instant::now();
        assert_eq!(
            svc.resolve(
                &CgroupIdentity::parse("/system.slice/x.service"),
                Duration::from_secs(5)
            )
            .await,
            None
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
