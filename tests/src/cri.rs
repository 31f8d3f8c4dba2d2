//! A real container runtime for the Kubernetes tests, driven the way kubelet drives it: Debian's
//! containerd (with its built-in CRI plugin) and runc, started by the test with its own config,
//! root, state and socket under a temporary directory; images built locally with umoci (there is
//! no registry); pods and containers made through CRI with kubelet-style cgroup parents under the
//! test's own memory cgroup. There is no crictl here, so this is the CRI client.
//!
//! Included by the test files that need it (`#[path = "../src/cri.rs"] mod cri;`), not a module of
//! the harness library: only those tests build the CRI client.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest, CreateContainerRequest,
    ImageSpec, KeyValue, LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest, runtime_service_client::RuntimeServiceClient,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The sandbox image containerd 1.6's CRI plugin asks for by default; imported, never pulled.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.6";
/// The workload image: busybox plus oomtrace-hog and the libraries it links.
pub const HOG_IMAGE: &str = "localhost/oomtrace-hog:test";

/// Why the runtime cannot be had here, or None when every tool is there.
pub fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = ["containerd", "ctr", "runc", "umoci"]
        .into_iter()
        .filter(|t| which(t).is_none())
        .collect();
    if !Path::new("/bin/busybox").exists() {
        return Some("no /bin/busybox (Debian: busybox-static) to build the test images from".into());
    }
    (!missing.is_empty()).then(|| {
        format!(
            "{} not installed (Debian: apt-get install containerd runc umoci)",
            missing.join(", ")
        )
    })
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// containerd, running with everything under `dir`.
pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd with the cgroupfs driver (PID 1 here is not systemd) and waits for its
    /// socket.
    pub fn start(dir: &Path) -> Result<Self, String> {
        let d = dir.display();
        // CNI is never needed: every sandbox uses the node's network namespace.
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # The sandbox asks for oom_score_adj -998; lowering it needs CAP_SYS_RESOURCE, which this
  # machine does not give (KERNEL-LAB.md): keep scores no lower than containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = false
    Root = "{d}/runc"
"#
        );
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        fs::write(dir.join("config.toml"), config).map_err(|e| e.to_string())?;
        let log = fs::File::create(dir.join("containerd.log")).map_err(|e| e.to_string())?;
        let child = Command::new(which("containerd").ok_or("no containerd")?)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("failed to start containerd: {e}"))?;
        let mut me = Self {
            dir: dir.to_owned(),
            socket: dir.join("containerd.sock"),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.socket.exists() {
            if let Some(Ok(Some(st))) = me.child.as_mut().map(Child::try_wait) {
                return Err(format!("containerd exited ({st}): {}", me.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "containerd's socket did not appear in 30 s: {}",
                    me.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `ctr` against this containerd, in kubelet's namespace.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new(which("ctr").expect("ctr"));
        c.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"]);
        c
    }

    /// Imports an OCI layout directory holding one image tagged `tag`, as `name:tag`.
    pub fn import(&self, layout: &Path, name: &str) {
        let tar = layout.with_extension("tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(layout)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        self.import_archive(&tar, name);
    }

    /// Imports an OCI archive (a tar of a layout) as `name:<its tag>`.
    pub fn import_archive(&self, tar: &Path, name: &str) {
        run(self
            .ctr()
            .args(["images", "import", "--base-name", name])
            .arg(tar));
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 10 s); what it ran must be removed first.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The pids of the processes whose parent is `ppid`.
fn children(ppid: u32) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // "pid (comm) state ppid ...": the comm may hold spaces, so split after its ')'.
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(ppid)
        })
        .collect()
}

impl Containerd {
    /// Kills what this containerd's shims still run (after a test failed half-way) and the shims
    /// themselves: they outlive containerd, and their processes keep the cgroups busy.
    fn kill_shims(&self) {
        let Ok(rd) = fs::read_dir("/proc") else { return };
        let ours = self.socket.to_string_lossy().into_owned();
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_our_shim = args
                .first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                && args.contains(&ours.as_bytes());
            if !is_our_shim {
                continue;
            }
            let mut victims = children(pid);
            let mut i = 0;
            while i < victims.len() {
                let more = children(victims[i]);
                victims.extend(more);
                i += 1;
            }
            victims.push(pid);
            for v in victims {
                // SAFETY: kill has no memory-safety preconditions; these are processes this
                // test's containerd started.
                unsafe { libc::kill(v as i32, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        self.kill_shims();
        // Mounts containerd left behind (after a failed test) would keep the directory busy.
        if let Ok(mounts) = fs::read_to_string("/proc/self/mounts") {
            let mut under: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|m| m.starts_with(&*self.dir.to_string_lossy()))
                .collect();
            under.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in under {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}

/// Builds an OCI image layout at `layout` (tag `tag`) from busybox-static and `files`
/// (host path, path in the image), with `entrypoint`.
pub fn build_image(layout: &Path, tag: &str, files: &[(PathBuf, String)], entrypoint: &[&str]) {
    let image = format!("{}:{tag}", layout.display());
    let bundle = layout.with_extension("bundle");
    let _ = fs::remove_dir_all(layout);
    let _ = fs::remove_dir_all(&bundle);
    run(Command::new("umoci").args(["init", "--layout"]).arg(layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).expect("mkdir bin");
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "sleep", "cat", "ls", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink applet");
    }
    for (src, dst) in files {
        let to = rootfs.join(dst.trim_start_matches('/'));
        fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        fs::copy(src, &to).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", src.display(), to.display()));
    }
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    let mut config = Command::new("umoci");
    config.args(["config", "--image", &image]);
    for e in entrypoint {
        config.arg(format!("--config.entrypoint={e}"));
    }
    run(&mut config);
    let _ = fs::remove_dir_all(&bundle);
}

/// A dynamically linked binary and every library `ldd` says it loads, as (host path, image path).
pub fn with_libraries(bin: &Path, at: &str) -> Vec<(PathBuf, String)> {
    let mut files = vec![(bin.to_owned(), at.to_owned())];
    let out = run(Command::new("ldd").arg(bin));
    for line in out.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push((PathBuf::from(p), p.to_owned()));
        }
    }
    files
}

/// A cgroup path made in every hierarchy by runc (cgroupfs driver, cgroup v1: one directory per
/// controller), removed deepest first on drop together with the ancestors it created.
pub struct CgroupTree {
    /// Per hierarchy: the first directory of `path` that did not exist before.
    created: Vec<PathBuf>,
}

impl CgroupTree {
    /// `path` relative to the hierarchy roots, e.g. `/<own memcg>/oomtrace-kube-1`.
    pub fn new(path: &str) -> Self {
        let mut created = Vec::new();
        for mount in cgroup_mounts() {
            let mut dir = mount.clone();
            for comp in path.trim_matches('/').split('/') {
                dir.push(comp);
                if !dir.exists() {
                    created.push(dir.clone());
                    break;
                }
            }
        }
        Self { created }
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        for top in &self.created {
            let mut dirs = Vec::new();
            let mut stack = vec![top.clone()];
            while let Some(d) = stack.pop() {
                if let Ok(rd) = fs::read_dir(&d) {
                    for e in rd.flatten() {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            stack.push(e.path());
                        }
                    }
                }
                dirs.push(d);
            }
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                for _ in 0..50 {
                    if fs::remove_dir(&d).is_ok() || !d.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Every cgroup (v1 and v2) mount point.
fn cgroup_mounts() -> Vec<PathBuf> {
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mi.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let mount = pre.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount))
        })
        .collect()
}

/// A CRI client over containerd's socket.
pub async fn connect(socket: &Path) -> RuntimeServiceClient<Channel> {
    let path = socket.to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = path.clone();
        let ch = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(60))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = p.clone();
                async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
            }))
            .await;
        match ch {
            Ok(ch) => {
                let mut c = RuntimeServiceClient::new(ch);
                // The CRI plugin starts serving a moment after the socket appears.
                if c.version(k8s_cri::v1::VersionRequest::default()).await.is_ok() {
                    return c;
                }
            }
            Err(e) if Instant::now() > deadline => panic!("CRI connect: {e}"),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "CRI did not answer in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pod as kubelet would describe it.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// kubelet-style cgroup parent, relative to the hierarchy root (`.../kubepods/burstable/pod<uid>`).
    pub cgroup_parent: String,
    /// kubelet's `/var/log/pods/<namespace>_<name>_<uid>` (below the test's own root).
    pub log_directory: PathBuf,
}

impl PodSpec {
    pub fn sandbox_config(&self) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            // The node's network means the node's UTS namespace: runc refuses a hostname.
            hostname: String::new(),
            log_directory: self.log_directory.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    // The node's network: no CNI needed.
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

pub async fn run_pod(c: &mut RuntimeServiceClient<Channel>, pod: &PodSpec) -> String {
    fs::create_dir_all(&pod.log_directory).expect("mkdir pod log directory");
    c.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(pod.sandbox_config()),
        runtime_handler: String::new(),
    })
    .await
    .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
    .into_inner()
    .pod_sandbox_id
}

/// Creates and starts a container; returns its ID.
pub async fn run_container(
    c: &mut RuntimeServiceClient<Channel>,
    sandbox_id: &str,
    pod: &PodSpec,
    name: &str,
    image: &str,
    command: &[&str],
    memory_limit_bytes: i64,
) -> String {
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        envs: vec![KeyValue {
            key: "PATH".into(),
            value: "/bin".into(),
        }],
        log_path: format!("{name}/0.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: memory_limit_bytes,
                ..Default::default()
            }),
            security_context: None,
        }),
        ..Default::default()
    };
    let id = c
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(pod.sandbox_config()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"))
        .into_inner()
        .container_id;
    c.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
    id
}

/// Waits for a container to exit; returns (exit code, reason), e.g. (137, "OOMKilled").
pub async fn wait_exit(c: &mut RuntimeServiceClient<Channel>, id: &str, timeout: Duration) -> (i32, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let st = c
            .container_status(ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus: {e}"))
            .into_inner()
            .status
            .expect("status");
        if st.state == ContainerState::ContainerExited as i32 {
            return (st.exit_code, st.reason);
        }
        assert!(
            Instant::now() < deadline,
            "container {id} still running after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn remove_container(c: &mut RuntimeServiceClient<Channel>, id: &str) {
    let _ = c
        .remove_container(RemoveContainerRequest {
            container_id: id.to_owned(),
        })
        .await;
}

pub async fn remove_pod(c: &mut RuntimeServiceClient<Channel>, sandbox_id: &str) {
    let _ = c
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
        })
        .await;
    let _ = c
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
        })
        .await;
}
