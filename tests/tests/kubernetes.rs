//! Kubernetes: a real containerd (Debian's 1.6, CRI plugin built in) and runc, started by the
//! test; a pod and a container created through CRI the way kubelet creates them (cgroupfs
//! driver, `kubepods/burstable/pod<uid>` cgroup parent under the test's own memory cgroup, an
//! image built locally with umoci); the container's hog OOM-killed by its memory limit; and
//! oomtrace's identity parsing and name service checked against what the runtime knows, also
//! after the container is gone and with no runtime at all (kubelet's /var/log/pods layout).

#[path = "../src/cri.rs"]
mod cri;

use std::{fs, path::Path, time::Duration};

use oomtrace::enrich::kube::{
    CgroupDriver, CgroupIdentity, Level, QosClass, Runtime, Scope,
    names::{self, NameService, NameSource},
};
use oomtrace_tests::{bin, kill_lock, own_memcg_path, require_root_memcg, skip_unless, vmstat_oom_kills};

const MIB: i64 = 1 << 20;

fn uuid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("random uuid")
        .trim()
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
    let mut ctrd = containerd_with_images(tmp.path());

    // kubelet's layout, under a directory of this test's own.
    let top = format!(
        "{}/oomtrace-kube-{}",
        own_memcg_path(version).trim_end_matches('/'),
        std::process::id()
    );
    let _cgroups = cri::CgroupTree::new(&top);
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

    let rt = runtime();
    rt.block_on(async {
        let mut c = cri::connect(&ctrd.socket).await;
        let sandbox = cri::run_pod(&mut c, &pod).await;
        let before = vmstat_oom_kills();
        let id = cri::run_container(
            &mut c,
            &sandbox,
            &pod,
            "hog",
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
    });
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
    assert_eq!(containers, ["hog"], "containerd's log layout");
    rt.block_on(async {
        let path = fs::read_dir(tmp.path().join("var/log/pods")).unwrap().count();
        assert_eq!(path, 1);
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
