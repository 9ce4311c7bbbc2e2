//! A site of hosts for `deploy` tests: each host a network namespace with Debian's `sshd` on
//! its own address, its own host key and an authorized key made here, and its own install
//! root (namespaces share the filesystem).
//!
//! Two links per host, like a real site: a management link from the operator (this, the root
//! namespace) to the host, a veth pair with addresses `10.231.<site>.<4h+1|2>/30`, and the
//! site network, one bridge in the root namespace joining every host on `10.232.<site>.<h>/24`.
//! The operator's bytes to a host are the transmit counter of the root end of its
//! management veth; traffic between hosts never touches it. Dropping the site kills the
//! sshds and deletes the namespaces and links.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One host of the site.
pub struct SiteHost {
    /// Inventory name (`n1`...).
    pub name: String,
    /// The network namespace.
    pub netns: String,
    /// Management address (ssh).
    pub mgmt: String,
    /// Site-network address.
    pub site: String,
    /// Root-namespace end of the management veth.
    pub mgmt_link: String,
    /// The install root.
    pub root: PathBuf,
    sshd: Child,
}

/// The hosts, the operator's ssh config and the links.
pub struct Site {
    /// The hosts in order.
    pub hosts: Vec<SiteHost>,
    /// The operator's ssh config (known_hosts, key, user root).
    pub ssh_config: PathBuf,
    /// The operator's private key.
    pub key: PathBuf,
    bridge: String,
    _dir: tempfile::TempDir,
    _roots: Vec<tempfile::TempDir>,
}

fn sh(cmd: &str) {
    let o = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("run sh");
    assert!(
        o.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Site {
    /// Builds `n` hosts; `id` (0..8) keeps the addresses of tests running at once apart.
    pub fn new(n: usize, id: u8) -> Site {
        let dir = tempfile::Builder::new()
            .prefix("site")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let tag = format!("{id}{}", std::process::id() % 10000);
        let bridge = format!("alb{tag}");
        sh(&format!(
            "ip link add {bridge} type bridge && ip link set {bridge} up"
        ));
        sh(&format!(
            "ssh-keygen -q -t ed25519 -N '' -f {}/id",
            d.display()
        ));
        fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
        fs::create_dir_all("/run/sshd").unwrap();
        let mut known = String::new();
        let mut hosts = Vec::new();
        let mut roots = Vec::new();
        for i in 1..=n {
            let netns = format!("al{tag}h{i}");
            let mgmt_link = format!("alm{tag}{i}");
            let site_link = format!("als{tag}{i}");
            let base = 4 * i;
            let (op_addr, mgmt) = (
                format!("10.231.{id}.{}", base + 1),
                format!("10.231.{id}.{}", base + 2),
            );
            let site = format!("10.232.{id}.{i}");
            sh(&format!(
                "ip netns add {netns} && ip -n {netns} link set lo up \
                 && ip link add {mgmt_link} type veth peer name m0 netns {netns} \
                 && ip addr add {op_addr}/30 dev {mgmt_link} && ip link set {mgmt_link} up \
                 && ip -n {netns} addr add {mgmt}/30 dev m0 && ip -n {netns} link set m0 up \
                 && ip link add {site_link} type veth peer name s0 netns {netns} \
                 && ip link set {site_link} master {bridge} && ip link set {site_link} up \
                 && ip -n {netns} addr add {site}/24 dev s0 && ip -n {netns} link set s0 up"
            ));
            let key = d.join(format!("host{i}"));
            sh(&format!(
                "ssh-keygen -q -t ed25519 -N '' -f {}",
                key.display()
            ));
            let pubkey = fs::read_to_string(key.with_extension("pub")).unwrap();
            known.push_str(&format!("{mgmt} {}", pubkey));
            let cfg = d.join(format!("sshd{i}.conf"));
            fs::write(
                &cfg,
                format!(
                    "ListenAddress {mgmt}\nHostKey {key}\nPidFile {d}/sshd{i}.pid\n\
                     AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                     StrictModes no\nPrintMotd no\nMaxSessions 50\nMaxStartups 50\n",
                    key = key.display(),
                    d = d.display()
                ),
            )
            .unwrap();
            // nsenter, not `ip netns exec`: that also makes a mount namespace with its own
            // /sys, where runc finds no cgroup mount (containers on the node fail).
            let sshd = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{netns}"))
                .args(["/usr/sbin/sshd", "-D", "-e", "-f"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(fs::File::create(d.join(format!("sshd{i}.log"))).unwrap())
                .spawn()
                .expect("start sshd");
            let root = tempfile::Builder::new()
                .prefix(&format!("r{i}"))
                .tempdir_in("/tmp")
                .unwrap();
            hosts.push(SiteHost {
                name: format!("n{i}"),
                netns,
                mgmt,
                site,
                mgmt_link,
                root: root.path().to_owned(),
                sshd,
            });
            roots.push(root);
        }
        fs::write(d.join("known_hosts"), known).unwrap();
        let ssh_config = d.join("ssh_config");
        fs::write(
            &ssh_config,
            format!(
                "Host *\n  User root\n  IdentityFile {d}/id\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {d}/known_hosts\n  GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                d = d.display()
            ),
        )
        .unwrap();
        let site = Site {
            hosts,
            ssh_config,
            key: d.join("id"),
            bridge,
            _dir: dir,
            _roots: roots,
        };
        for h in &site.hosts {
            site.wait_ssh(h);
        }
        site
    }

    /// Waits until the host's sshd answers.
    fn wait_ssh(&self, h: &SiteHost) {
        let start = Instant::now();
        loop {
            let ok = Command::new("ssh")
                .arg("-F")
                .arg(&self.ssh_config)
                .args(["-o", "BatchMode=yes", &h.mgmt, "true"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd of {} did not answer",
                h.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Bytes the operator sent to each host so far (management link transmit counters).
    pub fn operator_bytes(&self) -> Vec<u64> {
        self.hosts
            .iter()
            .map(|h| {
                fs::read_to_string(format!(
                    "/sys/class/net/{}/statistics/tx_bytes",
                    h.mgmt_link
                ))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
            })
            .collect()
    }

    /// Writes an inventory: hosts in `servers`/`agents` by `roles` ("server"/"agent"), or
    /// all under `all.hosts` when `roles` is empty; the first host's registry listens on
    /// its site address.
    pub fn inventory(&self, path: &Path, roles: &[&str]) {
        let line = |i: usize, h: &SiteHost| {
            let listen = if i == 0 {
                format!(", airlock_listen: \"{}:5000\"", h.site)
            } else {
                String::new()
            };
            format!(
                "        {}: {{ansible_host: {}, airlock_root: {}{listen}}}\n",
                h.name,
                h.mgmt,
                h.root.display()
            )
        };
        let mut text = format!(
            "all:\n  vars: {{ansible_user: root, ansible_ssh_private_key_file: {}}}\n",
            self.key.display()
        );
        if roles.is_empty() {
            text.push_str("  children:\n    site:\n      hosts:\n");
            for (i, h) in self.hosts.iter().enumerate() {
                text.push_str(&line(i, h));
            }
        } else {
            text.push_str("  children:\n");
            for group in ["server", "agent"] {
                text.push_str(&format!("    {group}s:\n      hosts:\n"));
                for (i, h) in self.hosts.iter().enumerate() {
                    if roles[i] == group {
                        text.push_str(&line(i, h));
                    }
                }
            }
        }
        fs::write(path, text).unwrap();
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            // Whatever an install left running under the root (a failed assertion).
            for copy in fs::read_dir(h.root.join("var/lib/airlock"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "run"))
            {
                let _ = Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{}", h.netns))
                    .arg(&copy)
                    .args(["-q", "uninstall", "--root"])
                    .arg(&h.root)
                    .output();
            }
            let _ = h.sshd.kill();
            let _ = h.sshd.wait();
            let _ = Command::new("ip").args(["netns", "del", &h.netns]).output();
            let _ = Command::new("ip")
                .args(["link", "del", &h.mgmt_link])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
