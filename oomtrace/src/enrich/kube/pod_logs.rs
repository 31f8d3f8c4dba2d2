//! Names from kubelet's log layout, for when no CRI runtime answers: kubelet keeps each pod's
//! logs in `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log` and links each
//! container's log as `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`
//! (pkg/kubelet/kuberuntime/helpers.go and kuberuntime_container.go, v1.31). Namespaces, pod
//! and container names are DNS labels or subdomains, which never contain `_`, so both names split
//! cleanly. The directories stay until kubelet removes the pod, so a killed container is still
//! named from them.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// Most directory entries read from each of the two directories (a bound on a node with an
/// unusual number of pods; kubelet's default is 110 pods per node).
pub const MAX_ENTRIES: usize = 20_000;

/// A pod's log directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The names of the pod's containers that have logs.
    pub containers: Vec<String>,
}

/// A container's log link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogContainer {
    pub id: String,
    pub namespace: String,
    pub pod: String,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSnapshot {
    pub pods: Vec<LogPod>,
    pub containers: Vec<LogContainer>,
}

/// Where kubelet's logs are, below `root` ("/" on the node, the host's mount point in a pod).
#[derive(Clone, Debug)]
pub struct PodLogs {
    pods: PathBuf,
    containers: PathBuf,
}

impl PodLogs {
    pub fn new(root: &Path) -> Self {
        Self {
            pods: root.join("var/log/pods"),
            containers: root.join("var/log/containers"),
        }
    }

    /// Whether kubelet's pod log directory is there at all.
    pub fn present(&self) -> bool {
        self.pods.is_dir()
    }

    /// Reads both directories (a few hundred readdir entries: cheap, but not for every record).
    pub fn scan(&self) -> LogSnapshot {
        let mut snap = LogSnapshot::default();
        for name in entries(&self.pods) {
            let Some((namespace, pod, uid)) = parse_pod_dir(&name) else {
                continue;
            };
            let mut containers: Vec<String> = entries(&self.pods.join(&name))
                .into_iter()
                .filter(|c| !c.starts_with('.'))
                .collect();
            containers.sort();
            snap.pods.push(LogPod {
                namespace: namespace.to_owned(),
                name: pod.to_owned(),
                uid: uid.to_ascii_lowercase(),
                containers,
            });
        }
        snap.containers = entries(&self.containers)
            .iter()
            .filter_map(|n| parse_container_link(n))
            .collect();
        snap
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .take(MAX_ENTRIES)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// `<namespace>_<pod>_<uid>`.
pub fn parse_pod_dir(name: &str) -> Option<(&str, &str, &str)> {
    let mut it = name.split('_');
    let (ns, pod, uid) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || ns.is_empty() || pod.is_empty() || uid.is_empty() {
        return None;
    }
    Some((ns, pod, uid))
}

/// `<pod>_<namespace>_<container>-<64 hex>.log`.
pub fn parse_container_link(name: &str) -> Option<LogContainer> {
    let stem = name.strip_suffix(".log")?;
    let mut it = stem.split('_');
    let (pod, ns, rest) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || pod.is_empty() || ns.is_empty() {
        return None;
    }
    let (container, id) = rest.rsplit_once('-')?;
    if container.is_empty() || id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(LogContainer {
        id: id.to_ascii_lowercase(),
        namespace: ns.to_owned(),
        pod: pod.to_owned(),
        name: container.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c9e7a5b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e";

    #[test]
    fn parses_pod_dirs() {
        assert_eq!(
            parse_pod_dir("kube-system_coredns-5d78c9869d-x2x7q_6a3c2b1e-9f4d-4c2a-8e7b-1d2c3b4a5f60"),
            Some((
                "kube-system",
                "coredns-5d78c9869d-x2x7q",
                "6a3c2b1e-9f4d-4c2a-8e7b-1d2c3b4a5f60"
            ))
        );
        assert_eq!(parse_pod_dir("a_b"), None);
        assert_eq!(parse_pod_dir("a_b_c_d"), None);
        assert_eq!(parse_pod_dir("_b_c"), None);
    }

    #[test]
    fn parses_container_links() {
        let c = parse_container_link(&format!("web-0_shop_nginx-sidecar-{ID}.log")).unwrap();
        assert_eq!(
            c,
            LogContainer {
                id: ID.to_owned(),
                namespace: "shop".to_owned(),
                pod: "web-0".to_owned(),
                name: "nginx-sidecar".to_owned(),
            }
        );
        assert_eq!(parse_container_link(&format!("web-0_shop_nginx-{ID}")), None);
        assert_eq!(parse_container_link("web-0_shop_nginx-abc.log"), None);
        assert_eq!(parse_container_link(&format!("web-0_shop_-{ID}.log")), None);
    }

    #[test]
    fn scans_a_kubelet_tree() {
        let root = tempfile::tempdir().unwrap();
        let uid = "6a3c2b1e-9f4d-4c2a-8e7b-1d2c3b4a5f60";
        let pod = root.path().join(format!("var/log/pods/shop_web-0_{uid}"));
        for c in ["nginx", "exporter"] {
            fs::create_dir_all(pod.join(c)).unwrap();
            fs::write(pod.join(c).join("0.log"), "").unwrap();
        }
        fs::create_dir_all(root.path().join("var/log/pods/not-a-pod")).unwrap();
        let links = root.path().join("var/log/containers");
        fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(
            pod.join("nginx/0.log"),
            links.join(format!("web-0_shop_nginx-{ID}.log")),
        )
        .unwrap();
        let logs = PodLogs::new(root.path());
        assert!(logs.present());
        let snap = logs.scan();
        assert_eq!(
            snap.pods,
            vec![LogPod {
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: uid.into(),
                containers: vec!["exporter".into(), "nginx".into()],
            }]
        );
        assert_eq!(snap.containers.len(), 1);
        assert_eq!(snap.containers[0].name, "nginx");
        assert!(!PodLogs::new(&root.path().join("nowhere")).present());
    }
}
