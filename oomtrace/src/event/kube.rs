//! What a cgroup path (and the container runtime) say about Kubernetes: the `kubernetes` objects
//! of `oom_kill` records and `oom_memcg.scope`. Filled by [`crate::enrich::kube`].

use serde::Serialize;

use super::wire_enum;

wire_enum! {
    /// A pod's quality-of-service class, as kubelet names its cgroup.
    pub enum QosClass {
        /// Requests equal limits for every container: the pod's cgroup sits right under kubepods.
        Guaranteed = "guaranteed",
        Burstable = "burstable",
        /// Kubernetes spells it `BestEffort`; kubelet's cgroup is `besteffort`.
        BestEffort = "besteffort",
    }
}

wire_enum! {
    /// The container runtime, as its cgroup names (or its CRI socket) tell it.
    pub enum Runtime {
        Containerd = "containerd",
        /// CRI-O.
        Crio = "crio",
        Docker = "docker",
        Podman = "podman",
    }
}

wire_enum! {
    /// Which limit an OOM hit, from its memcg's place in kubelet's cgroup tree.
    pub enum Scope {
        /// The container's own limit (`resources.limits.memory`).
        Container = "container",
        /// The pod's cgroup: the sum of its containers' limits, or a pod-level limit.
        Pod = "pod",
        /// A QoS class's cgroup (kubelet limits it only with `--qos-reserved`).
        Qos = "qos",
        /// `kubepods`: node allocatable, all pods together.
        Node = "node",
        /// No memcg: the whole machine ran out.
        Global = "global",
        /// Not part of kubelet's tree (a systemd service, a plain container, a cgroup below a pod
        /// that is no container's), or a cpuset / mempolicy OOM.
        Other = "other",
    }
}

wire_enum! {
    /// Where the names of a `kubernetes` object came from.
    pub enum NameSource {
        /// The container runtime's CRI socket.
        Cri = "cri",
        /// kubelet's `/var/log/pods` and `/var/log/containers` (no image there).
        PodLogs = "pod_logs",
    }
}

/// The pod and container a cgroup belongs to. The IDs and the QoS class come from the cgroup
/// path (always there, also after the container is gone); the names from the runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Kubernetes {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub qos: Option<QosClass>,
    pub container: Option<String>,
    /// The full 64-hex-digit ID.
    pub container_id: Option<String>,
    pub image: Option<String>,
    pub runtime: Option<Runtime>,
    /// Where `namespace`, `pod`, `container` and `image` came from; null when nothing named them.
    pub names_source: Option<NameSource>,
}
