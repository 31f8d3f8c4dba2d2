//! A small CRI client: the container runtime's own list of pod sandboxes and containers
//! (containerd's CRI plugin, CRI-O, cri-dockerd), read over its unix socket. It is what kubelet
//! talks to, so it knows every pod on the node by UID and every container by ID, without the API
//! server, and it still lists a container that has exited until kubelet removes it.
//!
//! Only `Version`, `ListPodSandbox` and `ListContainers` of `runtime.v1.RuntimeService` are used
//! (CRI v1: containerd >= 1.5... served by 1.6 beside v1alpha2, and the only API of CRI-O >= 1.24).

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    ListContainersRequest, ListPodSandboxRequest, VersionRequest,
    runtime_service_client::RuntimeServiceClient,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::Runtime;

/// Where runtimes put their CRI socket, in the order they are tried: containerd, CRI-O, k3s's
/// embedded containerd, cri-dockerd; `/var/run` is a symlink to `/run` on most distributions but
/// not on all (and not inside a container that mounts only one of them).
pub const SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
    "/run/cri-dockerd.sock",
    "/var/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/var/run/cri-dockerd.sock",
];

/// How long to wait for the socket to accept and for each call to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer taken from the runtime (kubelet allows 16 MiB too): a node with a few hundred
/// containers answers ListContainers with well under 1 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Kubelet's labels on every sandbox and container it creates
/// (pkg/kubelet/types/labels.go, v1.31): used when the structured metadata is empty.
const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// The first of [`SOCKETS`] that is a unix socket below `root` ("/" on the node; where the
/// node's `/run` is mounted, e.g. "/host", in a pod).
pub fn detect_socket(root: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    SOCKETS
        .iter()
        .map(|s| root.join(s.trim_start_matches('/')))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()))
}

/// A pod sandbox as the runtime lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// A container as the runtime lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    /// The image as the pod spec names it (e.g. `docker.io/library/nginx:1.27`), when the runtime
    /// says so; a bare image ID (`sha256:...`) is not taken for a name.
    pub image: Option<String>,
    /// The pod, from kubelet's labels on the container (kubelet always sets them; a container
    /// made by another CRI client may lack them, and then its sandbox tells).
    pub pod_uid: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
}

/// One reading of the runtime's lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub sandboxes: Vec<Sandbox>,
    pub containers: Vec<Container>,
}

/// A connection to a runtime's CRI socket.
#[derive(Clone, Debug)]
pub struct CriClient {
    client: RuntimeServiceClient<Channel>,
    socket: PathBuf,
    /// `VersionResponse.runtime_name` and `runtime_version`, e.g. "containerd" "1.6.20~ds1".
    pub runtime_name: String,
    pub runtime_version: String,
}

impl CriClient {
    /// Connects and asks the runtime for its version (so a socket that is no CRI endpoint, or a
    /// runtime without CRI v1, fails here and not at the first lookup).
    pub async fn connect(socket: &Path) -> Result<Self> {
        let channel = unix_channel(socket)
            .await
            .with_context(|| format!("failed to connect to the CRI socket {}", socket.display()))?;
        let mut client = RuntimeServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let v = client
            .version(VersionRequest {
                version: "v1".to_owned(),
            })
            .await
            .with_context(|| {
                format!(
                    "failed to ask {} for its CRI version (CRI v1 is served by containerd >= 1.6 and CRI-O >= 1.24)",
                    socket.display()
                )
            })?
            .into_inner();
        Ok(Self {
            client,
            socket: socket.to_owned(),
            runtime_name: v.runtime_name,
            runtime_version: v.runtime_version,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The runtime, if its name is one of those oomtrace knows.
    pub fn runtime(&self) -> Option<Runtime> {
        Runtime::from_cri_name(&self.runtime_name)
    }

    /// Every pod sandbox and container the runtime knows, exited ones included.
    pub async fn snapshot(&mut self) -> Result<Snapshot> {
        let sandboxes = self
            .client
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .context("failed to list pod sandboxes over CRI")?
            .into_inner()
            .items;
        let containers = self
            .client
            .list_containers(ListContainersRequest { filter: None })
            .await
            .context("failed to list containers over CRI")?
            .into_inner()
            .containers;
        Ok(Snapshot {
            sandboxes: sandboxes.into_iter().filter_map(sandbox).collect(),
            containers: containers.into_iter().map(container).collect(),
        })
    }
}

/// A gRPC channel over a unix socket (tonic speaks HTTP/2 over any stream; the URI is a
/// placeholder the connector ignores).
async fn unix_channel(socket: &Path) -> Result<Channel> {
    if !socket.exists() {
        bail!("{} does not exist", socket.display());
    }
    let path = socket.to_owned();
    let channel = Endpoint::from_static("http://cri.invalid")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await?;
    Ok(channel)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn label(labels: &HashMap<String, String>, key: &str) -> Option<String> {
    labels.get(key).cloned().and_then(non_empty)
}

fn sandbox(s: k8s_cri::v1::PodSandbox) -> Option<Sandbox> {
    let m = s.metadata.unwrap_or_default();
    let uid = non_empty(m.uid).or_else(|| label(&s.labels, LABEL_POD_UID))?;
    Some(Sandbox {
        id: s.id,
        uid: uid.to_ascii_lowercase(),
        namespace: non_empty(m.namespace)
            .or_else(|| label(&s.labels, LABEL_POD_NAMESPACE))
            .unwrap_or_default(),
        name: non_empty(m.name)
            .or_else(|| label(&s.labels, LABEL_POD_NAME))
            .unwrap_or_default(),
    })
}

fn container(c: k8s_cri::v1::Container) -> Container {
    let spec = c.image.unwrap_or_default();
    // CRI 1.30 added `user_specified_image`; before it, runtimes put either the name or the
    // image ID in `image` (containerd 1.6 lists the ID).
    let image = [spec.user_specified_image, spec.image]
        .into_iter()
        .find(|i| !i.is_empty() && !i.starts_with("sha256:"));
    let name = c
        .metadata
        .map(|m| m.name)
        .and_then(non_empty)
        .or_else(|| label(&c.labels, LABEL_CONTAINER_NAME))
        .unwrap_or_default();
    Container {
        id: c.id.to_ascii_lowercase(),
        sandbox_id: c.pod_sandbox_id,
        name,
        image,
        pod_uid: label(&c.labels, LABEL_POD_UID).map(|u| u.to_ascii_lowercase()),
        pod_namespace: label(&c.labels, LABEL_POD_NAMESPACE),
        pod_name: label(&c.labels, LABEL_POD_NAME),
    }
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{ContainerMetadata, ImageSpec, PodSandbox, PodSandboxMetadata};

    use super::*;

    #[test]
    fn sandbox_from_metadata_or_labels() {
        let s = sandbox(PodSandbox {
            id: "sb".into(),
            metadata: Some(PodSandboxMetadata {
                name: "web-0".into(),
                uid: "6A3C2B1E-9F4D-4C2A-8E7B-1D2C3B4A5F60".into(),
                namespace: "shop".into(),
                attempt: 0,
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.uid, "6a3c2b1e-9f4d-4c2a-8e7b-1d2c3b4a5f60");
        assert_eq!((s.namespace.as_str(), s.name.as_str()), ("shop", "web-0"));

        let labels = HashMap::from([
            (LABEL_POD_UID.to_owned(), "u1".to_owned()),
            (LABEL_POD_NAMESPACE.to_owned(), "ns".to_owned()),
            (LABEL_POD_NAME.to_owned(), "p".to_owned()),
        ]);
        let s = sandbox(PodSandbox {
            id: "sb".into(),
            labels,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (s.uid.as_str(), s.namespace.as_str(), s.name.as_str()),
            ("u1", "ns", "p")
        );

        // No UID at all: nothing to key it by.
        assert_eq!(sandbox(PodSandbox::default()), None);
    }

    #[test]
    fn container_image_name_not_id() {
        let mk = |image: &str, user: &str| {
            container(k8s_cri::v1::Container {
                id: "ABC".into(),
                metadata: Some(ContainerMetadata {
                    name: "app".into(),
                    attempt: 1,
                }),
                image: Some(ImageSpec {
                    image: image.into(),
                    user_specified_image: user.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        assert_eq!(mk("sha256:0123", "").image, None);
        assert_eq!(
            mk("sha256:0123", "nginx:1.27").image.as_deref(),
            Some("nginx:1.27")
        );
        assert_eq!(
            mk("docker.io/library/nginx:1.27", "").image.as_deref(),
            Some("docker.io/library/nginx:1.27")
        );
        let c = mk("", "");
        assert_eq!((c.id.as_str(), c.name.as_str(), c.image), ("abc", "app", None));
    }

    #[test]
    fn detects_a_socket_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect_socket(dir.path()), None);
        // A plain file where a socket should be is no socket.
        std::fs::create_dir_all(dir.path().join("run/containerd")).unwrap();
        std::fs::write(dir.path().join("run/containerd/containerd.sock"), "").unwrap();
        assert_eq!(detect_socket(dir.path()), None);
        std::fs::create_dir_all(dir.path().join("run/crio")).unwrap();
        let sock = dir.path().join("run/crio/crio.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(detect_socket(dir.path()), Some(sock));
    }

    #[tokio::test]
    async fn connect_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let err = CriClient::connect(&dir.path().join("none.sock"))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        // A socket that accepts but speaks no gRPC: the version call fails, within the timeout.
        let sock = dir.path().join("mute.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t = std::time::Instant::now();
        let err = CriClient::connect(&sock).await.unwrap_err();
        assert!(t.elapsed() < CALL_TIMEOUT + CONNECT_TIMEOUT + Duration::from_secs(2));
        assert!(format!("{err:#}").contains("CRI"), "{err:#}");
    }
}
