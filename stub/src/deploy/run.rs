//! The deploy and undeploy runs: preflight on every host, one upload, fan-out, installs in
//! role order, summary (see the module docs of [`super`]).
//!
//! Remote work is plain POSIX shell over [`Ssh`]: `df`, `stat`, `tail -c`, `sha256sum`,
//! `mv`, and `curl` or `wget` for the fetch from the first node; the install itself is the
//! installer's own `install` command run from the persistent copy.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};

use airlock_payload::{human_bytes, Engine, Installer, Sha256Digest, TRAILER_LEN};

use super::inventory::{Host, Inventory, RegistryMode, Role};
use super::ssh::{quote, Outcome, Ssh, SshOptions};
use super::DeployError;
use crate::install::persist::installer_copy_path;
use crate::install::preflight::space_needed;
use crate::install::STATE_DIR;
use crate::{Error, Result};

/// What `deploy` is asked to do.
pub struct DeployOptions<'a> {
    /// The parsed inventory.
    pub inventory: &'a Inventory,
    /// The installer being deployed (the operator's copy).
    pub installer: &'a Installer<'a>,
    /// Its file.
    pub installer_path: &'a Path,
    /// How to reach hosts.
    pub ssh: SshOptions,
    /// At most this many nodes fetch from one source at once.
    pub fanout: usize,
    /// Print the plan per node and change nothing.
    pub dry_run: bool,
    /// Bytes per second each fetch may use (`None`: no limit).
    pub limit_rate: Option<u64>,
}

/// The installer's facts every node is compared against.
struct Facts {
    name: String,
    version: String,
    len: u64,
    /// SHA-256 of the trailer (the last [`TRAILER_LEN`] bytes), hex: it holds the digests
    /// of the program part, the meta and the index, so equal trailers are equal installers
    /// once the node's `install` has verified the rest.
    trailer: String,
    engine: EngineKind,
    /// Bytes a node needs under its root (installer copy, files, margins).
    need: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EngineKind {
    K3s,
    Other,
}

/// Remote paths of one host.
struct Paths {
    root: String,
    state: String,
    copy: String,
    part: String,
    done: String,
    dirs: String,
    lock: String,
}

impl Paths {
    fn new(host: &Host, f: &Facts) -> Paths {
        let under = |logical: &str| {
            if host.root == "/" {
                logical.to_owned()
            } else {
                format!("{}{logical}", host.root.trim_end_matches('/'))
            }
        };
        Paths {
            root: host.root.clone(),
            state: under(STATE_DIR),
            copy: under(&installer_copy_path(&f.name, &f.version)),
            part: under(&format!(
                "{STATE_DIR}/.airlock-deploy-{}-{}.part",
                f.name, f.version
            )),
            done: under(&format!("{STATE_DIR}/deploy-{}.done", f.name)),
            dirs: under(&format!("{STATE_DIR}/deploy-{}.dirs", f.name)),
            lock: under(&format!("{STATE_DIR}/.airlock-deploy-{}.lock", f.name)),
        }
    }
}

/// What the remote preflight found on one host.
#[derive(Debug, Default)]
struct Probe {
    /// KiB available on the filesystem of the state folder (or its first existing parent).
    avail_kib: u64,
    /// Size and trailer digest of the persistent copy, when there is one.
    copy: Option<(u64, String)>,
    /// Size of a partial transfer.
    part: u64,
    /// The deploy marker's content.
    done: String,
    curl: bool,
    wget: bool,
    flock: bool,
    uid: Option<u32>,
    /// The registry answered `GET /v2/` (probed with curl).
    registry_up: bool,
}

impl Probe {
    fn parse(text: &str) -> Probe {
        let mut p = Probe::default();
        let kv: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let get = |k: &str| kv.get(k).copied().unwrap_or("");
        p.avail_kib = get("avail").parse().unwrap_or(0);
        if let (Ok(size), tail) = (get("copy_size").parse::<u64>(), get("copy_tail")) {
            p.copy = Some((
                size,
                tail.split_whitespace().next().unwrap_or("").to_owned(),
            ));
        }
        p.part = get("part").parse().unwrap_or(0);
        p.done = get("done").to_owned();
        p.curl = !get("curl").is_empty();
        p.wget = !get("wget").is_empty();
        p.flock = !get("flock").is_empty();
        p.uid = get("uid").parse().ok();
        p.registry_up = get("registry") == "up";
        p
    }

    fn has_current_copy(&self, f: &Facts) -> bool {
        self.copy
            .as_ref()
            .is_some_and(|(s, t)| *s == f.len && *t == f.trailer)
    }

    /// The node finished a deploy of this very installer and still serves it.
    fn converged(&self, f: &Facts) -> bool {
        self.has_current_copy(f) && self.done == f.trailer && self.registry_up
    }
}

/// How a node ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome2 {
    Installed,
    Skipped,
    Failed(String),
}

/// One node's line of the summary.
#[derive(Debug, Clone)]
struct NodeReport {
    host: String,
    role: Role,
    address: String,
    outcome: Outcome2,
    /// Installer bytes the operator sent to it.
    sent: u64,
    /// How it got the installer.
    how: String,
}

/// A line of progress from any thread, printed by the thread that owns the output.
type Lines = mpsc::Sender<String>;

/// A counting semaphore: at most `n` fetches from the first node at once.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }
    fn take(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

/// The address other nodes reach `host` on: its registry's address when that is a
/// specific, non-loopback one (a site network), else the address ssh uses.
fn site_host(host: &Host) -> String {
    let ip = host.listen.ip();
    if ip.is_unspecified() || ip.is_loopback() {
        host.address.clone()
    } else {
        match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        }
    }
}

/// The URL the first node serves the installer on.
fn installer_url(first: &Host) -> String {
    format!(
        "http://{}:{}/airlock/installer",
        site_host(first),
        first.listen.port()
    )
}

/// The address `GET /v2/` is probed on, from the node itself.
fn probe_addr(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        format!("127.0.0.1:{}", listen.port())
    } else {
        match listen {
            SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
            SocketAddr::V4(v4) => v4.to_string(),
        }
    }
}

fn facts(installer: &Installer<'_>) -> Result<Facts> {
    let bytes = installer.bytes();
    let len = bytes.len() as u64;
    let tail = &bytes[bytes.len().saturating_sub(TRAILER_LEN as usize)..];
    let trailer = Sha256Digest::of(tail).hex();
    let payload = installer.load_index()?;
    let index = payload.index();
    let engine = match index.install().engine {
        Engine::K3s(_) => EngineKind::K3s,
        _ => EngineKind::Other,
    };
    let (need, _) = space_needed(
        installer.meta().total_size,
        index.entries().len() as u64,
        len,
    );
    Ok(Facts {
        name: installer.meta().name.clone(),
        version: installer.meta().version.clone(),
        len,
        trailer,
        engine,
        need,
    })
}

/// The remote preflight script: changes nothing, prints `key=value` lines.
fn probe_script(p: &Paths, listen: SocketAddr) -> String {
    format!(
        r#"p={state}; while [ ! -d "$p" ]; do p=$(dirname "$p"); done
echo "avail=$(df -Pk "$p" | awk 'NR==2 {{print $4}}')"
if [ -f {copy} ]; then echo "copy_size=$(stat -c %s {copy})"; echo "copy_tail=$(tail -c {tl} {copy} | sha256sum)"; fi
echo "part=$(stat -c %s {part} 2>/dev/null)"
echo "done=$(cat {done} 2>/dev/null)"
echo "curl=$(command -v curl)"
echo "wget=$(command -v wget)"
echo "flock=$(command -v flock)"
echo "uid=$(id -u)"
if command -v curl >/dev/null && curl -fsS -m 5 -o /dev/null http://{addr}/v2/ 2>/dev/null; then echo registry=up; fi
"#,
        state = quote(&p.state),
        copy = quote(&p.copy),
        part = quote(&p.part),
        done = quote(&p.done),
        tl = TRAILER_LEN,
        addr = probe_addr(listen),
    )
}

/// Creates the state folder, noting the folders it created (deepest first) for undeploy,
/// and takes the per-host deploy lock when `flock` exists.
fn prepare_script(p: &Paths, flock: bool) -> String {
    let mut s = format!(
        r#"set -e
created=; p={state}
while [ ! -e "$p" ]; do created="$created$p
"; p=$(dirname "$p"); done
mkdir -p {state}
if [ -n "$created" ] && [ ! -e {dirs} ]; then printf '%s' "$created" > {dirs}; fi
"#,
        state = quote(&p.state),
        dirs = quote(&p.dirs),
    );
    if flock {
        s.push_str(&format!(
            "exec 9>{lock}\nflock -w 3600 9\n",
            lock = quote(&p.lock)
        ));
    }
    s
}

/// Checks the transferred file's size and trailer digest and renames it into place; a
/// complete file with the wrong trailer is removed (the next run starts over).
fn finish_script(p: &Paths, f: &Facts) -> String {
    format!(
        r#"s=$(stat -c %s {part})
t=$(tail -c {tl} {part} | sha256sum | cut -d' ' -f1)
if [ "$s" != {len} ] || [ "$t" != {digest} ]; then
  echo "the transferred installer does not match: $s bytes (want {len}), trailer digest $t (want {digest})" >&2
  [ "$s" -lt {len} ] || rm -f {part}
  exit 1
fi
chmod 0755 {part}
mv -f {part} {copy}
"#,
        part = quote(&p.part),
        copy = quote(&p.copy),
        tl = TRAILER_LEN,
        len = f.len,
        digest = f.trailer,
    )
}

/// The install command run on a node from its persistent copy.
fn install_command(p: &Paths, host: &Host, k3s: Option<&K3sRole>) -> String {
    let mut c = String::new();
    if let Some(K3sRole::Join { token, .. } | K3sRole::Agent { token, .. }) = k3s {
        c.push_str(&format!("K3S_TOKEN={} ", quote(token)));
    }
    c.push_str(&format!(
        "{} install --yes --listen {}",
        quote(&p.copy),
        host.listen
    ));
    if p.root != "/" {
        c.push_str(&format!(" --root {}", quote(&p.root)));
    }
    match k3s {
        Some(K3sRole::Init) => c.push_str(" --k3s-cluster-init"),
        Some(K3sRole::Join { url, .. }) => c.push_str(&format!(" --k3s-join {}", quote(url))),
        Some(K3sRole::Agent { url, .. }) => {
            c.push_str(&format!(" --k3s-join {} --k3s-agent", quote(url)))
        }
        None => {}
    }
    c
}

/// How a node takes part in a k3s cluster.
#[derive(Debug, Clone)]
enum K3sRole {
    /// The first server: `--cluster-init`.
    Init,
    /// A further server joining the first.
    Join { url: String, token: String },
    /// An agent joining the first server.
    Agent { url: String, token: String },
}

/// The k3s token file under a root.
fn token_path(root: &str) -> String {
    let logical = "/var/lib/rancher/k3s/server/token";
    if root == "/" {
        logical.to_owned()
    } else {
        format!("{}{logical}", root.trim_end_matches('/'))
    }
}

/// One deploy run's shared state.
struct Run<'a> {
    opts: &'a DeployOptions<'a>,
    facts: Facts,
    lines: Lines,
}

impl Run<'_> {
    fn say(&self, host: &Host, text: impl AsRef<str>) {
        let _ = self.lines.send(format!("{}: {}", host.name, text.as_ref()));
    }

    fn fail(&self, what: &str, o: &Outcome) -> String {
        format!("{what} failed ({}):{}", o.status(), o.tail())
    }

    /// Uploads the installer to the first node (resuming from the remote size).
    fn upload(&self, ssh: &Ssh, p: &Paths, probe: &Probe) -> std::result::Result<u64, String> {
        let host = ssh.host();
        let prep = ssh
            .run(&prepare_script(p, false))
            .map_err(|e| e.to_string())?;
        if !prep.success() {
            return Err(self.fail("creating the state folder", &prep));
        }
        let mut from = probe.part;
        if from > self.facts.len {
            from = 0;
        }
        let mut file = std::fs::File::open(self.opts.installer_path)
            .map_err(|e| format!("failed to open {}: {e}", self.opts.installer_path.display()))?;
        file.seek(SeekFrom::Start(from))
            .map_err(|e| format!("failed to read the installer: {e}"))?;
        self.say(
            host,
            format!(
                "upload: sending {} of {}{}",
                human_bytes(self.facts.len - from),
                human_bytes(self.facts.len),
                if from > 0 {
                    format!(" (resuming at {})", human_bytes(from))
                } else {
                    String::new()
                }
            ),
        );
        let script = format!(
            "{}{}",
            if from == 0 {
                format!(": > {}\n", quote(&p.part))
            } else {
                format!(
                    "[ \"$(stat -c %s {part})\" = {from} ] || {{ echo 'the partial upload changed size' >&2; exit 1; }}\n",
                    part = quote(&p.part)
                )
            },
            format!("cat >> {}", quote(&p.part))
        );
        let mut counted = Counted {
            inner: &mut file,
            n: 0,
        };
        let o = ssh
            .run_with_input(&script, Some(&mut counted), "the installer")
            .map_err(|e| e.to_string())?;
        let sent = counted.n;
        if !o.success() {
            return Err(self.fail("upload", &o));
        }
        let fin = ssh
            .run(&finish_script(p, &self.facts))
            .map_err(|e| e.to_string())?;
        if !fin.success() {
            return Err(self.fail("checking the upload", &fin));
        }
        self.say(
            host,
            format!(
                "upload: done, {} sent, trailer digest matches",
                human_bytes(sent)
            ),
        );
        Ok(sent)
    }

    /// Makes the node fetch the installer from the first node's registry.
    fn fetch(
        &self,
        ssh: &Ssh,
        p: &Paths,
        probe: &Probe,
        url: &str,
    ) -> std::result::Result<u64, String> {
        let host = ssh.host();
        let rate = self
            .opts
            .limit_rate
            .map(|r| r.to_string())
            .unwrap_or_default();
        let get = if probe.curl {
            format!(
                "curl -fsS --retry 3 --retry-delay 1 -C - {}-o {} {}",
                if rate.is_empty() {
                    String::new()
                } else {
                    format!("--limit-rate {rate} ")
                },
                quote(&p.part),
                quote(url)
            )
        } else {
            format!(
                "wget -q -c {}-O {} {}",
                if rate.is_empty() {
                    String::new()
                } else {
                    format!("--limit-rate={rate} ")
                },
                quote(&p.part),
                quote(url)
            )
        };
        let script = format!(
            r#"{prep}s=$(stat -c %s {part} 2>/dev/null || echo 0)
if [ "$s" -gt {len} ]; then rm -f {part}; s=0; fi
if [ "$s" -lt {len} ]; then {get}; fi
echo "fetched=$(( {len} - s ))"
{finish}"#,
            prep = prepare_script(p, probe.flock),
            part = quote(&p.part),
            len = self.facts.len,
            finish = finish_script(p, &self.facts),
        );
        self.say(host, format!("fetch: from {url}"));
        let o = ssh.run(&script).map_err(|e| e.to_string())?;
        if !o.success() {
            return Err(self.fail("fetch", &o));
        }
        let fetched: u64 = o
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("fetched="))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        self.say(
            host,
            format!(
                "fetch: done, {} fetched, trailer digest matches",
                human_bytes(fetched)
            ),
        );
        Ok(fetched)
    }

    /// Runs `install` on the node and writes the deploy marker.
    fn install(
        &self,
        ssh: &Ssh,
        p: &Paths,
        k3s: Option<&K3sRole>,
    ) -> std::result::Result<(), String> {
        let host = ssh.host();
        self.say(host, "install: running");
        let script = format!(
            "set -e\n{} 2>&1\nprintf '%s\\n' {} > {}\n",
            install_command(p, host, k3s),
            self.facts.trailer,
            quote(&p.done)
        );
        let o = ssh.run(&script).map_err(|e| e.to_string())?;
        if !o.success() {
            return Err(self.fail("install", &o));
        }
        let last = o
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        self.say(host, format!("install: done ({last})"));
        Ok(())
    }

    /// Reads the first server's k3s token.
    fn token(&self, ssh: &Ssh) -> std::result::Result<String, String> {
        let path = token_path(&ssh.host().root);
        let o = ssh
            .run(&format!("cat {}", quote(&path)))
            .map_err(|e| e.to_string())?;
        let token = o.stdout.trim().to_owned();
        if !o.success() || token.is_empty() {
            return Err(format!(
                "failed to read the k3s token {path} on the first server ({}):{}",
                o.status(),
                o.tail()
            ));
        }
        Ok(token)
    }
}

/// Counts the bytes read through it.
struct Counted<'r, R: Read> {
    inner: &'r mut R,
    n: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// Runs `f` on every host in parallel; results in host order.
fn on_all<T: Send>(hosts: &[Ssh], f: impl Fn(&Ssh) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = hosts.iter().map(|h| s.spawn(|| f(h))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a deploy thread panicked"))
            .collect()
    })
}

/// Connects to every host and runs the preflight script; problems name the host.
fn preflight(
    conns: &[Ssh],
    paths: &[Paths],
    facts: &Facts,
    first_needs_reach: bool,
) -> (Vec<Option<Probe>>, Vec<String>) {
    let results = on_all(conns, |ssh| {
        let i = conns
            .iter()
            .position(|c| std::ptr::eq(c, ssh))
            .expect("own host");
        ssh.run(&probe_script(&paths[i], ssh.host().listen))
    });
    let mut problems = Vec::new();
    let mut probes = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let h = conns[i].host();
        let at = format!("{} ({})", h.name, h.address);
        match r {
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                probes.push(None);
            }
            Ok(o) if !o.success() => {
                let why = if o.code == Some(255) {
                    "unreachable, or the key or host key was refused"
                } else {
                    "the remote preflight failed"
                };
                problems.push(format!("{at}: {why} ({}):{}", o.status(), o.tail()));
                probes.push(None);
            }
            Ok(o) => {
                let p = Probe::parse(&o.stdout);
                if !p.converged(facts) {
                    let have = p
                        .copy
                        .as_ref()
                        .filter(|_| p.has_current_copy(facts))
                        .map_or(0, |(s, _)| *s);
                    let need = facts.need.saturating_sub(have);
                    if p.avail_kib.saturating_mul(1024) < need {
                        problems.push(format!(
                            "{at}: not enough space under {}: need {}, {} available",
                            paths[i].root,
                            human_bytes(need),
                            human_bytes(p.avail_kib.saturating_mul(1024))
                        ));
                    }
                    if paths[i].root == "/" && p.uid != Some(0) {
                        problems.push(format!(
                            "{at}: the remote user is not root (uid {}); installing to / needs root (set ansible_user)",
                            p.uid.map_or_else(|| "unknown".into(), |u| u.to_string())
                        ));
                    }
                    if i > 0 && !p.has_current_copy(facts) && !p.curl && !p.wget {
                        problems.push(format!(
                            "{at}: neither curl nor wget is installed: the node cannot fetch the installer from the first node"
                        ));
                    }
                }
                probes.push(Some(p));
            }
        }
    }
    if first_needs_reach {
        let first = conns[0].host();
        if first.listen.ip().is_loopback() {
            problems.push(format!(
                "{} ({}): its registry listens on {} (airlock_listen), which the other nodes cannot reach; they fetch the installer from it: set airlock_listen to an address of the site network",
                first.name, first.address, first.listen
            ));
        }
    }
    (probes, problems)
}

/// `deploy`: see the module docs of [`super`]. Writes progress lines and the summary to
/// `out`; fails when preflight fails or any node failed.
pub fn deploy(opts: &DeployOptions<'_>, out: &mut dyn Write) -> Result<()> {
    let inv = opts.inventory;
    // The operator's copy is checked first: nothing is sent from a damaged file.
    opts.installer.verify_stub()?;
    let payload = opts.installer.load_index()?;
    let report = payload.verify(false, &|_| {});
    if !report.damaged.is_empty() {
        return Err(Error::Damaged {
            items: report.damaged.iter().map(|e| e.to_string()).collect(),
        });
    }
    let facts = facts(opts.installer)?;
    line(
        out,
        format!(
            "deploy: {} {} ({}, verified) to {} host{} from {}",
            facts.name,
            facts.version,
            human_bytes(facts.len),
            inv.hosts.len(),
            if inv.hosts.len() == 1 { "" } else { "s" },
            inv.path.display()
        ),
    )?;
    if inv.registry == RegistryMode::First && inv.hosts.len() > 1 {
        return Err(DeployError::Unsupported {
            path: inv.path.clone(),
            why: "registry: first is not supported yet (install has no flag to point mirror config at another node's registry); leave it out: every node then serves its own copy".into(),
        }
        .into());
    }
    if facts.engine == EngineKind::K3s {
        if let Some(h) = inv.hosts.iter().find(|h| h.role == Role::Node) {
            return Err(DeployError::from(super::InventoryError::Host {
                path: inv.path.clone(),
                line: h.line,
                host: h.name.clone(),
                why: "is in neither `servers` nor `agents`: engine k3s needs a role for every host"
                    .into(),
            })
            .into());
        }
        if inv.first().role != Role::Server {
            return Err(DeployError::Unsupported {
                path: inv.path.clone(),
                why: "engine k3s needs at least one host in `servers`".into(),
            }
            .into());
        }
    }
    let control = super::ssh::control_dir().map_err(DeployError::ControlDir)?;
    let mut ssh_opts = opts.ssh.clone();
    ssh_opts.control_dir = control.path().to_owned();
    let conns: Vec<Ssh> = inv.hosts.iter().map(|h| Ssh::new(h, &ssh_opts)).collect();
    let paths: Vec<Paths> = inv.hosts.iter().map(|h| Paths::new(h, &facts)).collect();
    let result = deploy_on(opts, &facts, &conns, &paths, out);
    for c in &conns {
        c.close();
    }
    result
}

fn deploy_on(
    opts: &DeployOptions<'_>,
    facts: &Facts,
    conns: &[Ssh],
    paths: &[Paths],
    out: &mut dyn Write,
) -> Result<()> {
    let (probes, problems) = preflight(conns, paths, facts, conns.len() > 1);
    if !problems.is_empty() {
        let hosts: std::collections::BTreeSet<&str> = problems
            .iter()
            .filter_map(|p| p.split(' ').next())
            .collect();
        return Err(DeployError::Preflight {
            hosts: hosts.len(),
            problems,
        }
        .into());
    }
    let probes: Vec<Probe> = probes.into_iter().map(|p| p.expect("no problem")).collect();
    let url = installer_url(conns[0].host());
    for (i, c) in conns.iter().enumerate() {
        let h = c.host();
        let p = &probes[i];
        let plan = if p.converged(facts) {
            "already at this version (copy, deploy marker and registry checked): skip".to_owned()
        } else {
            let get = if p.has_current_copy(facts) {
                "copy in place".to_owned()
            } else if i == 0 {
                format!(
                    "upload {}{}",
                    human_bytes(facts.len - p.part.min(facts.len)),
                    if p.part > 0 { " (resuming)" } else { "" }
                )
            } else {
                format!(
                    "fetch from {url} with {}",
                    if p.curl { "curl" } else { "wget" }
                )
            };
            let role = k3s_role_plan(facts, i, h);
            format!("{get}, then install{role} (registry on {})", h.listen)
        };
        line(
            out,
            format!(
                "{}: preflight ok ({} free under {}{}); plan: {plan}",
                h.name,
                human_bytes(p.avail_kib.saturating_mul(1024)),
                paths[i].root,
                if h.role == Role::Node {
                    String::new()
                } else {
                    format!(", {}", h.role)
                }
            ),
        )?;
    }
    if opts.dry_run {
        line(out, "dry run: nothing was changed".to_owned())?;
        return Ok(());
    }

    let (tx, rx) = mpsc::channel::<String>();
    let run = Run {
        opts,
        facts: Facts {
            ..clone_facts(facts)
        },
        lines: tx,
    };
    let slots = Slots::new(opts.fanout);
    let reports: Mutex<Vec<Option<NodeReport>>> = Mutex::new(vec![None; conns.len()]);
    let report = |i: usize, outcome: Outcome2, sent: u64, how: String| {
        let h = conns[i].host();
        reports.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(NodeReport {
            host: h.name.clone(),
            role: h.role,
            address: h.address.clone(),
            outcome,
            sent,
            how,
        });
    };
    // One node: get the installer (upload for the first, fetch for the others), install.
    let node = |i: usize, k3s: Option<&K3sRole>| -> bool {
        let (ssh, p, probe) = (&conns[i], &paths[i], &probes[i]);
        if probe.converged(&run.facts) {
            run.say(ssh.host(), "skipped: already at this version");
            report(i, Outcome2::Skipped, 0, "already there".into());
            return true;
        }
        let got = if probe.has_current_copy(&run.facts) {
            Ok((0, "copy in place".to_owned()))
        } else if i == 0 {
            run.upload(ssh, p, probe)
                .map(|n| (n, format!("uploaded {}", human_bytes(n))))
        } else {
            let _slot = slots.take();
            run.fetch(ssh, p, probe, &url).map(|n| {
                (
                    0,
                    format!("fetched {} from {}", human_bytes(n), conns[0].host().name),
                )
            })
        };
        let (sent, how) = match got {
            Ok(v) => v,
            Err(why) => {
                run.say(ssh.host(), "failed");
                report(i, Outcome2::Failed(why), 0, "-".into());
                return false;
            }
        };
        match run.install(ssh, p, k3s) {
            Ok(()) => {
                report(i, Outcome2::Installed, sent, how);
                true
            }
            Err(why) => {
                run.say(ssh.host(), "failed");
                report(i, Outcome2::Failed(why), sent, how);
                false
            }
        }
    };
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let k3s = run.facts.engine == EngineKind::K3s;
            let first_role = k3s.then_some(K3sRole::Init);
            if !node(0, first_role.as_ref()) {
                for i in 1..conns.len() {
                    report(
                        i,
                        Outcome2::Failed(format!(
                            "not attempted: the first node {} failed, and the others get the installer from it",
                            conns[0].host().name
                        )),
                        0,
                        "-".into(),
                    );
                }
                return;
            }
            if !k3s {
                std::thread::scope(|s2| {
                    for i in 1..conns.len() {
                        let node = &node;
                        s2.spawn(move || node(i, None));
                    }
                });
                return;
            }
            // k3s: the join URL and token of the first server, then servers one at a
            // time, then agents in parallel.
            let join_url = format!("https://{}:6443", site_host(conns[0].host()));
            let token = match run.token(&conns[0]) {
                Ok(t) => t,
                Err(why) => {
                    for i in 1..conns.len() {
                        report(i, Outcome2::Failed(why.clone()), 0, "-".into());
                    }
                    return;
                }
            };
            for i in 1..conns.len() {
                if conns[i].host().role == Role::Server {
                    let role = K3sRole::Join {
                        url: join_url.clone(),
                        token: token.clone(),
                    };
                    node(i, Some(&role));
                }
            }
            std::thread::scope(|s2| {
                for i in 1..conns.len() {
                    if conns[i].host().role == Role::Agent {
                        let role = K3sRole::Agent {
                            url: join_url.clone(),
                            token: token.clone(),
                        };
                        let node = &node;
                        s2.spawn(move || node(i, Some(&role)));
                    }
                }
            });
        });
        // This thread owns the output: print lines until every sender is gone.
        let _ = &worker;
        drop(run.lines.clone());
        while !worker.is_finished() {
            while let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
                let _ = line(out, l);
            }
        }
        while let Ok(l) = rx.try_recv() {
            let _ = line(out, l);
        }
    });
    let reports: Vec<NodeReport> = reports
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect();
    summary(out, &reports)?;
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| matches!(r.outcome, Outcome2::Failed(_)))
        .map(|r| r.host.clone())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(DeployError::NodesFailed {
            what: "deploy",
            failed,
        }
        .into())
    }
}

fn clone_facts(f: &Facts) -> Facts {
    Facts {
        name: f.name.clone(),
        version: f.version.clone(),
        len: f.len,
        trailer: f.trailer.clone(),
        engine: f.engine,
        need: f.need,
    }
}

fn k3s_role_plan(f: &Facts, i: usize, h: &Host) -> String {
    if f.engine != EngineKind::K3s {
        return String::new();
    }
    match (i, h.role) {
        (0, _) => " as the first k3s server (--cluster-init)".into(),
        (_, Role::Server) => " as a k3s server joining the first".into(),
        _ => " as a k3s agent joining the first server".into(),
    }
}

fn line(out: &mut dyn Write, text: String) -> Result<()> {
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

/// The summary table, then why each failed node failed.
fn summary(out: &mut dyn Write, reports: &[NodeReport]) -> Result<()> {
    let rows: Vec<[String; 6]> = reports
        .iter()
        .map(|r| {
            [
                r.host.clone(),
                r.role.to_string(),
                r.address.clone(),
                match &r.outcome {
                    Outcome2::Installed => "installed".into(),
                    Outcome2::Skipped => "skipped".into(),
                    Outcome2::Failed(_) => "FAILED".into(),
                },
                human_bytes(r.sent),
                r.how.clone(),
            ]
        })
        .collect();
    table(
        out,
        ["HOST", "ROLE", "ADDRESS", "RESULT", "SENT", "INSTALLER"],
        &rows,
    )?;
    for r in reports {
        if let Outcome2::Failed(why) = &r.outcome {
            line(out, format!("{}: {why}", r.host))?;
        }
    }
    Ok(())
}

fn table<const N: usize>(out: &mut dyn Write, head: [&str; N], rows: &[[String; N]]) -> Result<()> {
    let mut width = head.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let fmt = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    line(out, fmt(head.to_vec()))?;
    for r in rows {
        line(out, fmt(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// `undeploy`: on every host (agents first, the first node last), the installer's own
/// `uninstall` from the persistent copy, then what deploy added (copy, markers, the
/// folders it created).
pub fn undeploy(
    inventory: &Inventory,
    installer: &Installer<'_>,
    ssh: &SshOptions,
    out: &mut dyn Write,
) -> Result<()> {
    let name = installer.meta().name.clone();
    let version = installer.meta().version.clone();
    let f = Facts {
        name,
        version,
        len: 0,
        trailer: String::new(),
        engine: EngineKind::Other,
        need: 0,
    };
    let control = super::ssh::control_dir().map_err(DeployError::ControlDir)?;
    let mut ssh_opts = ssh.clone();
    ssh_opts.control_dir = control.path().to_owned();
    let mut failed = Vec::new();
    let mut rows = Vec::new();
    for h in inventory.hosts.iter().rev() {
        let c = Ssh::new(h, &ssh_opts);
        let p = Paths::new(h, &f);
        let uninstall = if p.root == "/" {
            format!("{} uninstall", quote(&p.copy))
        } else {
            format!("{} uninstall --root {}", quote(&p.copy), quote(&p.root))
        };
        let script = format!(
            r#"set -e
if [ -x {copy} ]; then {uninstall} 2>&1; else echo "no installer copy at {copy}: nothing installed"; fi
rm -f {part} {done} {lock} {copy}
if [ -f {dirs} ]; then
  list=$(cat {dirs}); rm -f {dirs}
  printf '%s\n' "$list" | while IFS= read -r d; do [ -z "$d" ] || rmdir -- "$d" 2>/dev/null || true; done
fi
"#,
            copy = quote(&p.copy),
            part = quote(&p.part),
            done = quote(&p.done),
            lock = quote(&p.lock),
            dirs = quote(&p.dirs),
        );
        line(out, format!("{}: undeploy: running uninstall", h.name))?;
        let result = c.run(&script);
        c.close();
        let (state, why) = match result {
            Ok(o) if o.success() => ("removed", None),
            Ok(o) => (
                "FAILED",
                Some(format!("uninstall failed ({}):{}", o.status(), o.tail())),
            ),
            Err(e) => ("FAILED", Some(e.to_string())),
        };
        line(out, format!("{}: undeploy: {state}", h.name))?;
        if let Some(w) = &why {
            failed.push(h.name.clone());
            rows.push((h.name.clone(), w.clone()));
        }
    }
    for (h, why) in &rows {
        line(out, format!("{h}: {why}"))?;
    }
    if failed.is_empty() {
        line(
            out,
            format!("undeploy: {} host(s) clean", inventory.hosts.len()),
        )?;
        Ok(())
    } else {
        Err(DeployError::NodesFailed {
            what: "undeploy",
            failed,
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(root: &str, listen: &str) -> Host {
        Host {
            name: "cp1".into(),
            line: 1,
            address: "10.0.0.11".into(),
            user: None,
            port: None,
            key: None,
            root: root.into(),
            listen: listen.parse().unwrap(),
            role: Role::Server,
        }
    }

    fn facts() -> Facts {
        Facts {
            name: "edge".into(),
            version: "1.0".into(),
            len: 1000,
            trailer: "ab".repeat(32),
            engine: EngineKind::Other,
            need: 5000,
        }
    }

    #[test]
    fn remote_paths_live_under_the_hosts_root() {
        let p = Paths::new(&host("/srv/r/", "127.0.0.1:5000"), &facts());
        assert_eq!(p.copy, "/srv/r/var/lib/airlock/edge-1.0.run");
        assert_eq!(
            p.part,
            "/srv/r/var/lib/airlock/.airlock-deploy-edge-1.0.part"
        );
        let p = Paths::new(&host("/", "127.0.0.1:5000"), &facts());
        assert_eq!(p.copy, "/var/lib/airlock/edge-1.0.run");
        assert_eq!(token_path("/"), "/var/lib/rancher/k3s/server/token");
    }

    #[test]
    fn other_nodes_fetch_from_the_site_address_of_the_first() {
        assert_eq!(
            installer_url(&host("/", "10.9.0.1:5000")),
            "http://10.9.0.1:5000/airlock/installer"
        );
        assert_eq!(
            installer_url(&host("/", "0.0.0.0:5001")),
            "http://10.0.0.11:5001/airlock/installer"
        );
        assert_eq!(
            probe_addr("0.0.0.0:5001".parse().unwrap()),
            "127.0.0.1:5001"
        );
    }

    #[test]
    fn a_probe_is_converged_only_with_copy_marker_and_registry() {
        let f = facts();
        let text = format!(
            "avail=100\ncopy_size=1000\ncopy_tail={}  -\npart=\ndone={}\ncurl=/usr/bin/curl\nwget=\nflock=/usr/bin/flock\nuid=0\nregistry=up\n",
            f.trailer, f.trailer
        );
        let p = Probe::parse(&text);
        assert!(p.has_current_copy(&f) && p.converged(&f));
        assert!(p.curl && !p.wget && p.flock);
        assert_eq!(p.uid, Some(0));
        let p = Probe::parse(&text.replace("registry=up\n", ""));
        assert!(p.has_current_copy(&f) && !p.converged(&f));
        let p = Probe::parse(&text.replace("copy_size=1000", "copy_size=999"));
        assert!(!p.has_current_copy(&f));
        let p = Probe::parse("avail=5\npart=77\n");
        assert_eq!((p.avail_kib, p.part, p.copy.is_none()), (5, 77, true));
    }

    #[test]
    fn install_commands_carry_root_listen_and_the_k3s_role() {
        let f = facts();
        let h = host("/r", "10.9.0.1:5000");
        let p = Paths::new(&h, &f);
        assert_eq!(
            install_command(&p, &h, None),
            "/r/var/lib/airlock/edge-1.0.run install --yes --listen 10.9.0.1:5000 --root /r"
        );
        assert!(install_command(&p, &h, Some(&K3sRole::Init)).ends_with(" --k3s-cluster-init"));
        let c = install_command(
            &p,
            &h,
            Some(&K3sRole::Agent {
                url: "https://10.9.0.1:6443".into(),
                token: "K10x::server:y".into(),
            }),
        );
        assert!(c.starts_with("K3S_TOKEN=K10x::server:y /r/"), "{c}");
        assert!(
            c.ends_with(" --k3s-join https://10.9.0.1:6443 --k3s-agent"),
            "{c}"
        );
    }

    #[test]
    fn the_summary_is_a_table_followed_by_the_reasons() {
        let mut out = Vec::new();
        summary(
            &mut out,
            &[
                NodeReport {
                    host: "cp1".into(),
                    role: Role::Server,
                    address: "10.0.0.11".into(),
                    outcome: Outcome2::Installed,
                    sent: 2048,
                    how: "uploaded 2.0 KiB".into(),
                },
                NodeReport {
                    host: "w1".into(),
                    role: Role::Agent,
                    address: "10.0.0.21".into(),
                    outcome: Outcome2::Failed("install failed (exit code 1):\n    | boom".into()),
                    sent: 0,
                    how: "fetched".into(),
                },
            ],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("HOST  ROLE    ADDRESS    RESULT"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("w1    agent   10.0.0.21  FAILED"),
            "{text}"
        );
        assert!(
            text.ends_with("w1: install failed (exit code 1):\n    | boom\n"),
            "{text}"
        );
    }
}
