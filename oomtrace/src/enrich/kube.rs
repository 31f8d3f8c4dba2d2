//! Kubernetes and container identity from a cgroup path: pod UID, QoS class, container ID and
//! runtime, and which level of kubelet's cgroup tree a memory cgroup is (so an OOM's memcg tells
//! whether the container's, the pod's, the QoS class's or the node's limit fired).
//!
//! Pure parsing, no I/O: it works from the path alone, also after the container is gone. The
//! names (namespace, pod, container, image) come from the runtime, see [`names`].
//!
//! What kubelet and the runtimes encode (kubelet `pkg/kubelet/cm/cgroup_manager_linux.go` and
//! `qos_container_manager_linux.go`, v1.31; the runtimes' cgroup drivers):
//!
//! | driver   | node                | QoS                          | pod                                          | container                              |
//! |----------|---------------------|------------------------------|----------------------------------------------|----------------------------------------|
//! | cgroupfs | `kubepods`          | `burstable`, `besteffort`    | `pod<uid>`                                   | `<64 hex>`, `crio-<id>`                |
//! | systemd  | `kubepods.slice`    | `kubepods-burstable.slice`   | `kubepods-burstable-pod<uid, - as _>.slice`  | `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` |
//!
//! Guaranteed pods sit directly under the node level (`kubepods/pod<uid>`,
//! `kubepods-pod<uid>.slice`). A custom `--cgroup-root` or a node that is itself a container
//! (kind, k3s in docker) puts all of this below other components (`/kubelet/kubepods/...`,
//! `/docker/<node id>/kubepods/...`, `kubelet-kubepods-burstable.slice`), so components are matched
//! wherever they sit; the innermost kubepods tree wins. Outside Kubernetes, docker
//! (`docker-<id>.scope`, `/docker/<id>`) and podman (`libpod-<id>.scope`, `/libpod_parent/libpod-<id>`)
//! containers are still recognized. Runtime helpers that share the pod's cgroup tree
//! (`crio-conmon-<id>`, `libpod-conmon-<id>`) are never taken for the container.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde::Serialize;

use self::names::NameService;
use crate::event::{Kubernetes, OomKill};
pub use crate::event::{QosClass, Runtime, Scope};

pub mod cri;
pub mod names;
pub mod pod_logs;

impl QosClass {
    fn from_component(s: &str) -> Option<Self> {
        match s {
            "burstable" => Some(Self::Burstable),
            "besteffort" => Some(Self::BestEffort),
            _ => None,
        }
    }
}

impl Runtime {
    /// From a CRI `VersionResponse.runtime_name` ("containerd", "cri-o", "docker").
    pub fn from_cri_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "containerd" => Some(Self::Containerd),
            "cri-o" | "crio" => Some(Self::Crio),
            "docker" => Some(Self::Docker),
            "podman" => Some(Self::Podman),
            _ => None,
        }
    }
}

/// Which kubelet cgroup driver made the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupDriver {
    /// Plain directories: `kubepods/burstable/pod<uid>/<id>`.
    Cgroupfs,
    /// systemd slices and scopes: `kubepods.slice/kubepods-burstable.slice/...`.
    Systemd,
}

/// How deep in kubelet's cgroup tree a cgroup is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// `kubepods` itself: node allocatable, every pod on the node.
    Node,
    /// A QoS class's cgroup (`burstable`, `besteffort`).
    Qos,
    /// A pod's cgroup.
    Pod,
    /// Below a pod, but no container's cgroup (e.g. CRI-O's `crio-conmon-<id>`).
    PodOther,
    /// A container's cgroup, or a cgroup the container made inside its own.
    Container,
}

impl Scope {
    /// The scope of a memory cgroup's limit, from its path (relative to the hierarchy root, as
    /// /proc/<pid>/cgroup prints it). The hierarchy root has no limit: an OOM there is global.
    pub fn of_memcg(path: &str) -> Self {
        if path.trim_matches('/').is_empty() {
            return Self::Global;
        }
        match CgroupIdentity::parse(path).level {
            Some(Level::Container) => Self::Container,
            Some(Level::Pod) => Self::Pod,
            Some(Level::Qos) => Self::Qos,
            Some(Level::Node) => Self::Node,
            Some(Level::PodOther) | None => Self::Other,
        }
    }

    /// The scope of an OOM: `oom_memcg_path` is the path of the OOM's memcg (`oom_memcg.path`),
    /// `None` when the OOM had none. Without a memcg the OOM is `global` when its constraint was
    /// CONSTRAINT_NONE (`global_constraint`), `other` for CONSTRAINT_CPUSET / MEMORY_POLICY
    /// (include/linux/oom.h, v6.18).
    pub fn of_oom(oom_memcg_path: Option<&str>, global_constraint: bool) -> Self {
        match oom_memcg_path {
            Some(p) => Self::of_memcg(p),
            None if global_constraint => Self::Global,
            None => Self::Other,
        }
    }
}

/// A pod as its cgroup names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PodRef {
    /// With dashes (`6a3c2b1e-...`), also when the systemd driver spelled them `_`; static pods
    /// have 32 hex digits instead of a UUID.
    pub uid: String,
    /// `None` only without kubelet's QoS levels (`--cgroups-per-qos=false`).
    pub qos: Option<QosClass>,
}

/// A container as its cgroup names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ContainerRef {
    /// The full 64-hex-digit ID.
    pub id: String,
    /// `None` for a bare `<64 hex>` directory under a pod: containerd's cgroupfs naming, which
    /// cri-dockerd uses too; the CRI runtime that lists the ID tells which.
    pub runtime: Option<Runtime>,
}

/// What a cgroup path says about Kubernetes and containers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CgroupIdentity {
    pub pod: Option<PodRef>,
    pub container: Option<ContainerRef>,
    /// The driver of the kubepods tree, when the path is in one.
    pub driver: Option<CgroupDriver>,
    /// Where in the kubepods tree the path ends; `None` outside one.
    pub level: Option<Level>,
}

/// One path component, classified.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    /// A kubepods root (`kubepods`, `kubepods.slice`, `kubelet-kubepods.slice`).
    Node(CgroupDriver),
    Qos(CgroupDriver, QosClass),
    /// A pod, with the QoS its systemd slice name carries (`None` for cgroupfs's `pod<uid>`,
    /// whose QoS is its parent's).
    Pod(CgroupDriver, String, Option<QosClass>),
    Container(ContainerRef),
    /// `docker` / `libpod_parent`: a bare id below names the runtime.
    RuntimeParent(Runtime),
    Other,
}

impl CgroupIdentity {
    /// Parses a cgroup path (relative to the hierarchy root, as /proc/<pid>/cgroup and the
    /// kernel's OOM report print it; v1 or v2 alike).
    pub fn parse(path: &str) -> Self {
        let parts: Vec<Part> = path.split('/').filter(|c| !c.is_empty()).map(classify).collect();
        // The innermost kubepods tree wins: kind and k3s-in-docker nodes are containers of an
        // outer runtime, and their pods are the workloads.
        if let Some(root) = parts.iter().rposition(|p| matches!(p, Part::Node(_))) {
            Self::in_kubepods(&parts[root..])
        } else if let Some(pod) = parts.iter().rposition(|p| matches!(p, Part::Pod(..))) {
            // kubelet with --cgroups-per-qos=false: pods right under the cgroup root, no QoS
            // levels (and the QoS cannot be told from the path).
            Self::below_pod(&parts[pod..], None)
        } else {
            Self {
                container: Self::plain_container(&parts),
                ..Self::default()
            }
        }
    }

    /// `parts[0]` is the kubepods root.
    fn in_kubepods(parts: &[Part]) -> Self {
        let Part::Node(driver) = parts[0] else {
            unreachable!("in_kubepods starts at a Node part")
        };
        let mut me = Self {
            driver: Some(driver),
            level: Some(Level::Node),
            ..Self::default()
        };
        let mut qos = None;
        let mut i = 1;
        if let Some(Part::Qos(_, q)) = parts.get(i) {
            qos = Some(*q);
            me.level = Some(Level::Qos);
            i += 1;
        }
        match parts.get(i) {
            None => me,
            Some(Part::Pod(..)) => {
                let pod = Self::below_pod(&parts[i..], Some(qos.unwrap_or(QosClass::Guaranteed)));
                Self {
                    driver: Some(driver),
                    ..pod
                }
            }
            // Something kubelet does not make (a cgroup of its own, a runtime's helper).
            Some(_) => Self { level: None, ..me },
        }
    }

    /// `parts[0]` is a pod; `qos` is what its parents said (`None`: no kubepods tree at all).
    fn below_pod(parts: &[Part], qos: Option<QosClass>) -> Self {
        let Part::Pod(driver, uid, slice_qos) = &parts[0] else {
            unreachable!("below_pod starts at a Pod part")
        };
        // A systemd pod slice carries its QoS in its name; it agrees with its parent's.
        let pod = Some(PodRef {
            uid: uid.clone(),
            qos: slice_qos.or(qos),
        });
        let (container, level) = match parts.get(1) {
            None => (None, Level::Pod),
            Some(Part::Container(c)) => (Some(c.clone()), Level::Container),
            Some(_) => (None, Level::PodOther),
        };
        Self {
            pod,
            container,
            driver: Some(*driver),
            level: Some(level),
        }
    }

    /// A container outside Kubernetes: the innermost one on the path.
    fn plain_container(parts: &[Part]) -> Option<ContainerRef> {
        let i = parts.iter().rposition(|p| matches!(p, Part::Container(_)))?;
        let Part::Container(c) = &parts[i] else {
            unreachable!()
        };
        let mut c = c.clone();
        if c.runtime.is_none()
            && let Some(Part::RuntimeParent(r)) = i.checked_sub(1).map(|j| &parts[j])
        {
            c.runtime = Some(*r);
        }
        Some(c)
    }

    /// The pod UID, if the path is a pod's or below one (also without a QoS class).
    pub fn pod_uid(&self) -> Option<&str> {
        self.pod.as_ref().map(|p| p.uid.as_str())
    }
}

/// How long the pipeline waits for the runtime to name a pod or container it has not seen yet
/// (one that started since the last refresh): one CRI round trip, normally a few ms.
pub const RESOLVE_WAIT: Duration = Duration::from_millis(500);
/// A pod or container the runtime did not name is not waited for again this soon (an OOM storm
/// in a cgroup no runtime knows must not wait on every kill).
const MISS_TTL: Duration = Duration::from_secs(30);
const MAX_MISSES: usize = 4096;

/// Fills in the `kubernetes` objects of `oom_kill` events and `oom_memcg.scope`: the identity
/// from each cgroup path, the names from the [`NameService`] (if any).
pub struct Kube {
    names: Option<NameService>,
    /// Pod UIDs and container IDs a refresh did not name, and when.
    misses: HashMap<String, Instant>,
}

impl Kube {
    pub fn new(names: Option<NameService>) -> Self {
        Self {
            names,
            misses: HashMap::new(),
        }
    }

    /// The pod and container of a cgroup path, or None when it is neither a pod's nor a
    /// container's.
    pub fn describe(&mut self, path: Option<&str>) -> Option<Kubernetes> {
        let id = CgroupIdentity::parse(path?);
        if id.pod.is_none() && id.container.is_none() {
            return None;
        }
        let names = self.names(&id);
        let names = names.as_ref();
        Some(Kubernetes {
            namespace: names.map(|n| n.namespace.clone()),
            pod: names.map(|n| n.pod.clone()),
            pod_uid: id.pod.as_ref().map(|p| p.uid.clone()),
            qos: id.pod.as_ref().and_then(|p| p.qos),
            container: names.and_then(|n| n.container.clone()),
            container_id: id.container.as_ref().map(|c| c.id.clone()),
            image: names.and_then(|n| n.image.clone()),
            runtime: id
                .container
                .as_ref()
                .and_then(|c| c.runtime)
                .or_else(|| id.container.as_ref().and(names.and_then(|n| n.runtime))),
            names_source: names.map(|n| n.source),
        })
    }

    fn names(&mut self, id: &CgroupIdentity) -> Option<names::Names> {
        let svc = self.names.as_ref()?;
        if let Some(n) = svc.lookup(id) {
            return Some(n);
        }
        let key = id
            .container
            .as_ref()
            .map(|c| c.id.clone())
            .or_else(|| id.pod.as_ref().map(|p| p.uid.clone()))?;
        let now = Instant::now();
        if self
            .misses
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < MISS_TTL)
        {
            return None;
        }
        let found = svc.resolve_blocking(id, RESOLVE_WAIT);
        if found.is_none() {
            if self.misses.len() >= MAX_MISSES {
                self.misses.retain(|_, t| now.duration_since(*t) < MISS_TTL);
            }
            if self.misses.len() < MAX_MISSES {
                self.misses.insert(key, now);
            }
        }
        found
    }

    /// Fills `victim.kubernetes`, `trigger.kubernetes`, `oom_memcg.kubernetes` and
    /// `oom_memcg.scope`.
    pub fn annotate(&mut self, ev: &mut OomKill) {
        let victim_path = ev.victim.cgroup.as_ref().and_then(|c| c.path.clone());
        ev.victim.kubernetes = self.describe(victim_path.as_deref());
        let trigger_path = ev.trigger.cgroup.as_ref().and_then(|c| c.path.clone());
        ev.trigger.kubernetes = if trigger_path == victim_path {
            ev.victim.kubernetes.clone()
        } else {
            self.describe(trigger_path.as_deref())
        };
        if let Some(m) = ev.oom_memcg.as_mut() {
            m.scope = m.path.as_deref().map(Scope::of_memcg);
            m.kubernetes = self.describe(m.path.clone().as_deref());
        }
    }

    /// The name service, for metrics expiry.
    pub fn name_service(&self) -> Option<&NameService> {
        self.names.as_ref()
    }
}

fn classify(c: &str) -> Part {
    if c == "kubepods" {
        return Part::Node(CgroupDriver::Cgroupfs);
    }
    if let Some(q) = QosClass::from_component(c) {
        return Part::Qos(CgroupDriver::Cgroupfs, q);
    }
    if let Some(uid) = c.strip_prefix("pod").and_then(pod_uid) {
        return Part::Pod(CgroupDriver::Cgroupfs, uid, None);
    }
    if let Some(name) = c.strip_suffix(".slice") {
        return classify_slice(name);
    }
    match c {
        "docker" => return Part::RuntimeParent(Runtime::Docker),
        "libpod_parent" => return Part::RuntimeParent(Runtime::Podman),
        _ => {}
    }
    container(c).map_or(Part::Other, Part::Container)
}

/// A systemd slice name without `.slice`: its dash-separated words repeat the parent slices'
/// names (`kubepods-burstable-pod<uid>` is inside `kubepods-burstable` inside `kubepods`).
fn classify_slice(name: &str) -> Part {
    let words: Vec<&str> = name.split('-').collect();
    let Some(k) = words.iter().rposition(|w| *w == "kubepods") else {
        return Part::Other;
    };
    let d = CgroupDriver::Systemd;
    match &words[k + 1..] {
        [] => Part::Node(d),
        [q] => match QosClass::from_component(q) {
            Some(q) => Part::Qos(d, q),
            None => slice_pod(q, QosClass::Guaranteed).unwrap_or(Part::Other),
        },
        [q, pod] => match QosClass::from_component(q) {
            Some(q) => slice_pod(pod, q).unwrap_or(Part::Other),
            None => Part::Other,
        },
        _ => Part::Other,
    }
}

/// `pod<uid>` in a slice name, where systemd's driver spells the UID's `-` as `_` (`-` separates
/// slice levels).
fn slice_pod(word: &str, qos: QosClass) -> Option<Part> {
    let uid = pod_uid(&word.strip_prefix("pod")?.replace('_', "-"))?;
    Some(Part::Pod(CgroupDriver::Systemd, uid, Some(qos)))
}

/// A pod UID: a UUID (`8-4-4-4-12` hex digits), or the 32 hex digits of a static pod's UID
/// (kubelet `pkg/kubelet/config/common.go`, v1.31, hashes the manifest for it).
fn pod_uid(s: &str) -> Option<String> {
    let groups: Vec<&str> = s.split('-').collect();
    let uuid = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && is_hex(g));
    let hash = s.len() == 32 && is_hex(s);
    (uuid || hash).then(|| s.to_ascii_lowercase())
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A container ID: 64 hex digits, as every runtime here makes them.
fn container_id(s: &str) -> Option<String> {
    (s.len() == 64 && is_hex(s)).then(|| s.to_ascii_lowercase())
}

/// A container's own cgroup, in each runtime's spelling.
fn container(c: &str) -> Option<ContainerRef> {
    let name = c.strip_suffix(".scope").unwrap_or(c);
    // Longest prefixes first; a helper's prefix (conmon) never names the container.
    const PREFIXES: [(&str, Option<Runtime>); 6] = [
        ("crio-conmon-", None),
        ("libpod-conmon-", None),
        ("cri-containerd-", Some(Runtime::Containerd)),
        ("crio-", Some(Runtime::Crio)),
        ("docker-", Some(Runtime::Docker)),
        ("libpod-", Some(Runtime::Podman)),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            let runtime = runtime?;
            return container_id(rest).map(|id| ContainerRef {
                id,
                runtime: Some(runtime),
            });
        }
    }
    if name.len() != c.len() {
        // A bare id is a directory, never a systemd scope.
        return None;
    }
    container_id(c).map(|id| ContainerRef { id, runtime: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6a3c2b1e-9f4d-4c2a-8e7b-1d2c3b4a5f60";
    const UID_: &str = "6a3c2b1e_9f4d_4c2a_8e7b_1d2c3b4a5f60";
    const ID: &str = "3f1c9e7a5b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e";
    const ID2: &str = "a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8e9f";

    fn p(s: &str) -> CgroupIdentity {
        CgroupIdentity::parse(s)
    }

    fn pod(qos: QosClass) -> Option<PodRef> {
        Some(PodRef {
            uid: UID.to_owned(),
            qos: Some(qos),
        })
    }

    fn ctr(id: &str, runtime: Option<Runtime>) -> Option<ContainerRef> {
        Some(ContainerRef {
            id: id.to_owned(),
            runtime,
        })
    }

    fn full(
        pod_: Option<PodRef>,
        container: Option<ContainerRef>,
        driver: CgroupDriver,
        level: Level,
    ) -> CgroupIdentity {
        CgroupIdentity {
            pod: pod_,
            container,
            driver: Some(driver),
            level: Some(level),
        }
    }

    use CgroupDriver::{Cgroupfs, Systemd};
    use QosClass::{BestEffort, Burstable, Guaranteed};

    #[test]
    fn cgroupfs_containerd_each_qos() {
        // containerd's CRI plugin with the cgroupfs driver names the container's cgroup by its id.
        assert_eq!(
            p(&format!("/kubepods/burstable/pod{UID}/{ID}")),
            full(pod(Burstable), ctr(ID, None), Cgroupfs, Level::Container)
        );
        assert_eq!(
            p(&format!("/kubepods/besteffort/pod{UID}/{ID}")),
            full(pod(BestEffort), ctr(ID, None), Cgroupfs, Level::Container)
        );
        assert_eq!(
            p(&format!("/kubepods/pod{UID}/{ID}")),
            full(pod(Guaranteed), ctr(ID, None), Cgroupfs, Level::Container)
        );
    }

    #[test]
    fn systemd_containerd_v2_each_qos() {
        assert_eq!(
            p(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
            )),
            full(
                pod(Burstable),
                ctr(ID, Some(Runtime::Containerd)),
                Systemd,
                Level::Container
            )
        );
        assert_eq!(
            p(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
            )),
            full(
                pod(BestEffort),
                ctr(ID, Some(Runtime::Containerd)),
                Systemd,
                Level::Container
            )
        );
        assert_eq!(
            p(&format!(
                "/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"
            )),
            full(
                pod(Guaranteed),
                ctr(ID, Some(Runtime::Containerd)),
                Systemd,
                Level::Container
            )
        );
    }

    #[test]
    fn crio_systemd_and_conmon() {
        let base = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        assert_eq!(
            p(&format!("{base}/crio-{ID}.scope")),
            full(
                pod(Burstable),
                ctr(ID, Some(Runtime::Crio)),
                Systemd,
                Level::Container
            )
        );
        // conmon, CRI-O's monitor, sits beside the container in the pod's slice: not the container.
        assert_eq!(
            p(&format!("{base}/crio-conmon-{ID}.scope")),
            full(pod(Burstable), None, Systemd, Level::PodOther)
        );
        assert_eq!(
            Scope::of_memcg(&format!("{base}/crio-conmon-{ID}.scope")),
            Scope::Other
        );
    }

    #[test]
    fn crio_cgroupfs() {
        assert_eq!(
            p(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}")),
            full(
                pod(BestEffort),
                ctr(ID, Some(Runtime::Crio)),
                Cgroupfs,
                Level::Container
            )
        );
        assert_eq!(
            p(&format!("/kubepods/besteffort/pod{UID}/crio-conmon-{ID}")).container,
            None
        );
    }

    #[test]
    fn cri_dockerd_systemd() {
        assert_eq!(
            p(&format!(
                "/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope"
            )),
            full(
                pod(Guaranteed),
                ctr(ID, Some(Runtime::Docker)),
                Systemd,
                Level::Container
            )
        );
    }

    #[test]
    fn levels_and_scopes() {
        let cases = [
            ("/kubepods".to_owned(), Scope::Node),
            ("/kubepods.slice".to_owned(), Scope::Node),
            ("/kubepods/burstable".to_owned(), Scope::Qos),
            ("/kubepods.slice/kubepods-besteffort.slice".to_owned(), Scope::Qos),
            (format!("/kubepods/burstable/pod{UID}"), Scope::Pod),
            (format!("/kubepods/pod{UID}"), Scope::Pod),
            (format!("/kubepods.slice/kubepods-pod{UID_}.slice"), Scope::Pod),
            (format!("/kubepods/burstable/pod{UID}/{ID}"), Scope::Container),
            ("/".to_owned(), Scope::Global),
            (String::new(), Scope::Global),
            ("/system.slice/ssh.service".to_owned(), Scope::Other),
            (format!("/system.slice/docker-{ID}.scope"), Scope::Other),
            ("/kubepods/burstable/pod-not-a-uid".to_owned(), Scope::Other),
        ];
        for (path, scope) in cases {
            assert_eq!(Scope::of_memcg(&path), scope, "{path}");
        }
        assert_eq!(Scope::of_oom(None, true), Scope::Global);
        assert_eq!(Scope::of_oom(None, false), Scope::Other);
        assert_eq!(Scope::of_oom(Some("/kubepods/besteffort"), true), Scope::Qos);
    }

    #[test]
    fn kubepods_levels_carry_what_is_known() {
        assert_eq!(
            p("/kubepods/burstable"),
            CgroupIdentity {
                driver: Some(Cgroupfs),
                level: Some(Level::Qos),
                ..Default::default()
            }
        );
        assert_eq!(
            p(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
            )),
            full(pod(Burstable), None, Systemd, Level::Pod)
        );
    }

    #[test]
    fn below_the_container_is_the_container() {
        // crun makes `container` inside the scope when the container is given a cgroup
        // namespace of its own; processes may make their own children too.
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope/container"
        );
        assert_eq!(
            p(&path),
            full(
                pod(Burstable),
                ctr(ID, Some(Runtime::Crio)),
                Systemd,
                Level::Container
            )
        );
        assert_eq!(
            p(&format!("/kubepods/pod{UID}/{ID}/worker/a")).container,
            ctr(ID, None)
        );
        assert_eq!(Scope::of_memcg(&path), Scope::Container);
    }

    #[test]
    fn kind_systemd_with_kubelet_cgroup_root() {
        // kind runs kubelet with --cgroup-root=/kubelet and the systemd driver: every slice name
        // carries the prefix.
        let path = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            p(&path),
            full(
                pod(BestEffort),
                ctr(ID, Some(Runtime::Containerd)),
                Systemd,
                Level::Container
            )
        );
        assert_eq!(
            Scope::of_memcg("/kubelet.slice/kubelet-kubepods.slice"),
            Scope::Node
        );
        assert_eq!(Scope::of_memcg("/kubelet.slice"), Scope::Other);
    }

    #[test]
    fn kind_on_cgroup_v1_inside_docker() {
        // A kind node on a v1 host: the node is a docker container, its pods below it.
        let path = format!("/docker/{ID2}/kubelet/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(
            p(&path),
            full(pod(Burstable), ctr(ID, None), Cgroupfs, Level::Container)
        );
        // The node container's own limit is not part of the pod tree.
        assert_eq!(Scope::of_memcg(&format!("/docker/{ID2}")), Scope::Other);
        assert_eq!(
            p(&format!("/docker/{ID2}")).container,
            ctr(ID2, Some(Runtime::Docker))
        );
    }

    #[test]
    fn k3s_cgroupfs_and_in_docker() {
        // k3s defaults to the cgroupfs driver without systemd, and to /kubepods.
        assert_eq!(
            p(&format!("/kubepods/besteffort/pod{UID}/{ID}")).pod,
            pod(BestEffort)
        );
        // k3d: k3s inside a docker container on a v2 host with the systemd driver: seen from
        // the host, the node's kubepods tree is inside the node container's scope.
        let node = format!("/system.slice/docker-{ID2}.scope");
        let path = format!("{node}/kubepods/pod{UID}/{ID}");
        assert_eq!(
            p(&path),
            full(pod(Guaranteed), ctr(ID, None), Cgroupfs, Level::Container)
        );
        assert_eq!(Scope::of_memcg(&node), Scope::Other);
    }

    #[test]
    fn custom_cgroup_root_and_nested_test_cgroup() {
        // What the tests do: a kubelet-style tree under the test's own memory cgroup.
        let path = format!("/process_api/87df09a2740d896068166612bdf2a4dd/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(
            p(&path),
            full(pod(Burstable), ctr(ID, None), Cgroupfs, Level::Container)
        );
        assert_eq!(
            Scope::of_memcg(&format!(
                "/process_api/87df09a2740d896068166612bdf2a4dd/kubepods/burstable/pod{UID}"
            )),
            Scope::Pod
        );
        assert_eq!(
            Scope::of_memcg("/process_api/87df09a2740d896068166612bdf2a4dd"),
            Scope::Other
        );
    }

    #[test]
    fn systemd_pod_uid_underscores_become_dashes() {
        let id = p(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
        ));
        assert_eq!(id.pod_uid(), Some(UID));
    }

    #[test]
    fn static_pod_uid_is_a_hash() {
        let hash = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let id = p(&format!("/kubepods/burstable/pod{hash}/{ID}"));
        assert_eq!(id.pod_uid(), Some(hash));
        let id = p(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice"
        ));
        assert_eq!(id.pod_uid(), Some(hash));
    }

    #[test]
    fn docker_outside_kubernetes() {
        assert_eq!(
            p(&format!("/system.slice/docker-{ID}.scope")),
            CgroupIdentity {
                container: ctr(ID, Some(Runtime::Docker)),
                ..Default::default()
            }
        );
        // docker with the cgroupfs driver (v1 hosts).
        assert_eq!(
            p(&format!("/docker/{ID}")).container,
            ctr(ID, Some(Runtime::Docker))
        );
    }

    #[test]
    fn podman_systemd_rootless_and_cgroupfs() {
        assert_eq!(
            p(&format!("/machine.slice/libpod-{ID}.scope")).container,
            ctr(ID, Some(Runtime::Podman))
        );
        let rootless =
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container");
        assert_eq!(p(&rootless).container, ctr(ID, Some(Runtime::Podman)));
        assert_eq!(
            p(&format!("/libpod_parent/libpod-{ID}")).container,
            ctr(ID, Some(Runtime::Podman))
        );
        assert_eq!(
            p(&format!("/machine.slice/libpod-conmon-{ID}.scope")).container,
            None
        );
    }

    #[test]
    fn cri_o_pods_running_under_cgroups_per_qos_false() {
        // kubelet --cgroups-per-qos=false: no kubepods tree, pods right under the root; the QoS
        // class is not in the path.
        let id = p(&format!("/pod{UID}/crio-{ID}"));
        assert_eq!(
            id.pod,
            Some(PodRef {
                uid: UID.to_owned(),
                qos: None
            })
        );
        assert_eq!(id.container, ctr(ID, Some(Runtime::Crio)));
        assert_eq!(id.level, Some(Level::Container));
    }

    #[test]
    fn not_kubernetes_not_containers() {
        for path in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/containerd.service",
            "/system.slice/kubelet.service",
            // Too short, not hex, a scope with a bare id.
            "/docker/3f1c9e7a",
            &format!("/docker/{}", ID.replace('a', "g")),
            &format!("/system.slice/{ID}.scope"),
            // Looks like kubepods but is not one.
            "/kubepodsx/burstable",
            "/my-kubepods-thing.service",
        ] {
            let id = p(path);
            assert_eq!(id.pod, None, "{path}");
            assert_eq!(id.container, None, "{path}");
            assert_eq!(id.level, None, "{path}");
        }
    }

    #[test]
    fn unknown_child_of_kubepods_is_no_level() {
        // Something of the admin's own beside the QoS classes.
        assert_eq!(p("/kubepods/system-reserved").level, None);
        assert_eq!(Scope::of_memcg("/kubepods/burstable/misc"), Scope::Other);
    }

    #[test]
    fn innermost_kubepods_tree_wins() {
        // A pod whose container runs a nested kubelet (e.g. a CI runner with kind inside).
        let path = format!("/kubepods/burstable/pod{UID}/{ID2}/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(
            p(&path),
            full(pod(BestEffort), ctr(ID, None), Cgroupfs, Level::Container)
        );
    }

    #[test]
    fn trailing_slash_and_uppercase_hex() {
        let upper = ID.to_ascii_uppercase();
        let id = p(&format!(
            "/kubepods/burstable/pod{}/{upper}/",
            UID.to_ascii_uppercase()
        ));
        assert_eq!(
            id,
            full(pod(Burstable), ctr(ID, None), Cgroupfs, Level::Container)
        );
    }

    #[test]
    fn serde_names() {
        let j = |v: &dyn erased::Ser| v.json();
        assert_eq!(j(&QosClass::BestEffort), "\"besteffort\"");
        assert_eq!(j(&QosClass::Guaranteed), "\"guaranteed\"");
        assert_eq!(j(&Runtime::Crio), "\"crio\"");
        assert_eq!(j(&Scope::Node), "\"node\"");
        assert_eq!(j(&Level::PodOther), "\"pod_other\"");
        assert_eq!(j(&CgroupDriver::Systemd), "\"systemd\"");
        for q in [Guaranteed, Burstable, BestEffort] {
            assert_eq!(j(&q), format!("\"{}\"", q.as_str()));
        }
        for s in [
            Scope::Container,
            Scope::Pod,
            Scope::Qos,
            Scope::Node,
            Scope::Global,
            Scope::Other,
        ] {
            assert_eq!(j(&s), format!("\"{}\"", s.as_str()));
        }
        for r in [
            Runtime::Containerd,
            Runtime::Crio,
            Runtime::Docker,
            Runtime::Podman,
        ] {
            assert_eq!(j(&r), format!("\"{}\"", r.as_str()));
            assert_eq!(Runtime::from_cri_name(r.as_str()), Some(r));
        }
        assert_eq!(Runtime::from_cri_name("cri-o"), Some(Runtime::Crio));
    }

    /// serde_json of a value behind a trait object, for the table above.
    mod erased {
        pub trait Ser {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Ser for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }
}
