//! `deploy` over SSH to many nodes with one upload, for real: hosts are network namespaces
//! running Debian's sshd (tests/tests/util/site.rs), each with its own install root.
//! Engine containerd (Debian's binaries, as in tests/engine.rs): a deploy killed mid
//! fan-out and run again completes, every node runs `example.hub/team/app:1.0` through its
//! containerd socket, the operator sent the second and third host under 5 % of the
//! installer's size, a re-run changes nothing, and undeploy leaves nothing.

#[path = "util/site.rs"]
mod site;
mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_fixtures::images::{same_name_different_registries, write_pause_layout};
use site::Site;
use util::Workdir;

const PROGRAMS: [(&str, &str); 4] = [
    ("/usr/bin/containerd", "containerd"),
    (
        "/usr/bin/containerd-shim-runc-v2",
        "containerd-shim-runc-v2",
    ),
    ("/usr/bin/ctr", "ctr"),
    ("/usr/sbin/runc", "runc"),
];

/// Random, incompressible bytes: they make the installer large enough that ssh's own
/// traffic to a fetching node is small next to it.
const NOISE: usize = 16 << 20;

fn site_ready(test: &str) -> bool {
    util::oci::containerd_ready(test)
        && util::prerequisite(
            Path::new("/usr/sbin/sshd").exists() && util::have_command("ssh"),
            test,
            "apt-get install openssh-server openssh-client",
        )
        && util::prerequisite(util::have_command("ip"), test, "apt-get install iproute2")
}

fn build_containerd(work: &Workdir) -> PathBuf {
    same_name_different_registries(&work.join("images/same")).expect("write fixture images");
    write_pause_layout(&work.join("images/pause"), "3.6").expect("write the pause image");
    let noise: Vec<u8> = {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        (0..NOISE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    work.write_file("data/noise.bin", noise);
    let files: String = PROGRAMS
        .iter()
        .map(|(src, name)| format!("  - src: {src}\n    dest: /usr/local/bin/{name}\n"))
        .collect();
    work.write_spec(&format!(
        "name: node\nversion: \"1.0\"\nfiles:\n{files}  - src: data/noise.bin\n    dest: /opt/noise.bin\n\
         images:\n  - ref: example.hub/team/app:1.0\n    from: oci:images/same/hub:1\n  \
         - ref: registry.k8s.io/pause:3.6\n    from: oci:images/pause:3.6\nengine: containerd\n"
    ));
    work.build("node.run")
}

fn deploy_cmd(
    work: &Workdir,
    installer: &Path,
    site: &Site,
    inv: &Path,
    extra: &[&str],
) -> Command {
    let mut c = work.installer_command(installer, &["deploy", "-i"]);
    c.arg(inv)
        .arg("--ssh-config")
        .arg(&site.ssh_config)
        .args(extra);
    c
}

fn tree_of(root: &Path) -> Vec<String> {
    util::tree(root)
}

#[test]
fn deploy_installs_three_containerd_nodes_with_one_upload_converges_and_undeploys() {
    let test = "deploy_installs_three_containerd_nodes_with_one_upload_converges_and_undeploys";
    if !site_ready(test) {
        return;
    }
    let work = Workdir::new();
    let installer = build_containerd(&work);
    let size = fs::metadata(&installer).unwrap().len();
    let site = Site::new(3, 1);
    let inv = work.join("nodes.yaml");
    site.inventory(&inv, &[]);
    let before = site.operator_bytes();

    // A dry run plans and changes nothing.
    let dry = util::run(deploy_cmd(&work, &installer, &site, &inv, &["--dry-run"])).success();
    assert!(
        dry.stdout.contains("n1: preflight ok"),
        "{}",
        dry.describe()
    );
    assert!(dry.stdout.contains("plan: upload"), "{}", dry.describe());
    assert!(dry
        .stdout
        .contains("plan: fetch from http://10.232.1.1:5000/airlock/installer"));
    for h in &site.hosts {
        assert_eq!(
            tree_of(&h.root),
            Vec::<String>::new(),
            "dry run changed {}",
            h.name
        );
    }

    // Killed mid fan-out (slow fetches, one at a time): the re-run completes.
    let mut c = deploy_cmd(
        &work,
        &installer,
        &site,
        &inv,
        &["--fanout", "1", "--limit-rate", "2M"],
    );
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let part = |i: usize| {
        site.hosts[i]
            .root
            .join("var/lib/airlock/.airlock-deploy-node-1.0.part")
    };
    let start = Instant::now();
    while !(1..3).any(|i| fs::metadata(part(i)).is_ok_and(|m| m.len() > 0)) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "deploy ended before the fan-out"
        );
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no fetch started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGKILL to deploy itself, by its pid (no group kill: procps-ng 4.0.2's `kill -KILL
    // -PGID` was seen taking down unrelated processes here).
    child.kill().unwrap();
    let _ = child.wait();
    // The remote half of a node's step may finish after the operator died (sshd does not
    // kill it); the re-run then finds it complete, or waits on the node's deploy lock.

    let run = util::run(deploy_cmd(&work, &installer, &site, &inv, &[])).success();
    let out = &run.stdout;
    assert!(
        out.contains("n1: skipped: already at this version"),
        "{}",
        run.describe()
    );
    assert!(!out.contains("FAILED"), "{}", run.describe());
    for h in &site.hosts {
        assert!(
            h.root.join("var/lib/airlock/deploy-node.done").exists(),
            "{} not deployed:\n{}",
            h.name,
            run.describe()
        );
    }
    assert!(out.contains("HOST  ROLE  ADDRESS"), "{}", run.describe());

    // Every node runs the image through its own containerd socket.
    for h in &site.hosts {
        let sock = h.root.join("run/containerd/containerd.sock");
        let mut c = Command::new(h.root.join("usr/local/bin/ctr"));
        c.arg("--address").arg(&sock).args([
            "-n",
            "k8s.io",
            "run",
            "--rm",
            "example.hub/team/app:1.0",
            &format!("app-{}", h.name),
        ]);
        let ran = util::run(c).success();
        assert!(!ran.stdout.is_empty(), "{} printed nothing", h.name);
    }

    // The installer crossed the operator's link once: hosts 2 and 3 got under 5 %.
    let after = site.operator_bytes();
    let sent: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(sent[0] >= size, "host 1 got {} of {size}", sent[0]);
    for i in [1, 2] {
        assert!(
            sent[i] * 20 < size,
            "the operator sent host {} {} bytes, installer {size}",
            i + 1,
            sent[i]
        );
    }
    eprintln!("installer {size} bytes; operator sent {sent:?}");

    // A re-run changes nothing.
    let copy = site.hosts[2].root.join("var/lib/airlock/node-1.0.run");
    let mtime = fs::metadata(&copy).unwrap().modified().unwrap();
    let again = util::run(deploy_cmd(&work, &installer, &site, &inv, &[])).success();
    for h in &site.hosts {
        assert!(
            again
                .stdout
                .contains(&format!("{}: skipped: already at this version", h.name)),
            "{}",
            again.describe()
        );
    }
    assert_eq!(fs::metadata(&copy).unwrap().modified().unwrap(), mtime);

    // Undeploy leaves nothing.
    let mut c = work.installer_command(&installer, &["undeploy", "-i"]);
    c.arg(&inv).arg("--ssh-config").arg(&site.ssh_config);
    let un = util::run(c).success();
    assert!(
        un.stdout.contains("undeploy: 3 host(s) clean"),
        "{}",
        un.describe()
    );
    for h in &site.hosts {
        assert_eq!(
            tree_of(&h.root),
            Vec::<String>::new(),
            "undeploy left files on {}",
            h.name
        );
    }
}

#[test]
fn an_unknown_host_key_and_an_unreachable_host_fail_preflight_naming_them() {
    let test = "an_unknown_host_key_and_an_unreachable_host_fail_preflight_naming_them";
    if !site_ready(test) {
        return;
    }
    let work = Workdir::new();
    work.write_file("etc/a.conf", "a\n");
    work.write_spec("name: tiny\nversion: '1'\nfiles:\n  - src: etc/\n    dest: /etc/tiny/\n");
    let installer = work.build("tiny.run");
    let site = Site::new(2, 2);
    let inv = work.join("nodes.yaml");
    site.inventory(&inv, &[]);
    // Forget host 2's key, and add a host nobody answers for.
    let known = site.ssh_config.with_file_name("known_hosts");
    let text = fs::read_to_string(&known).unwrap();
    fs::write(&known, text.lines().next().unwrap().to_owned() + "\n").unwrap();
    let mut yaml = fs::read_to_string(&inv).unwrap();
    yaml.push_str("        gone: {ansible_host: 10.231.2.99}\n");
    fs::write(&inv, yaml).unwrap();
    let c = deploy_cmd(&work, &installer, &site, &inv, &["--connect-timeout", "2"]);
    let run = util::run(c).expect_code(1);
    run.stderr_has("preflight failed on 2 host(s), nothing was changed");
    run.stderr_has("n2 (10.231.2.10): unreachable, or the key or host key was refused");
    run.stderr_has("Host key verification failed");
    run.stderr_has("gone (10.231.2.99): unreachable");
    for h in &site.hosts {
        assert_eq!(tree_of(&h.root), Vec::<String>::new());
    }
    // --accept-new-host-keys learns the new key (the unreachable host still fails).
    let c = deploy_cmd(
        &work,
        &installer,
        &site,
        &inv,
        &[
            "--accept-new-host-keys",
            "--dry-run",
            "--connect-timeout",
            "2",
        ],
    );
    let run = util::run(c).expect_code(1);
    assert!(
        !run.stderr.contains("n2 (10.231.2.10)"),
        "{}",
        run.describe()
    );
}
