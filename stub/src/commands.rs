//! Running a parsed command line against an installer file.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use airlock_payload::Installer;

use crate::cli::{
    Cli, Command, InstallArgs, KeyArgs, PushArgs, RegistryCommand, ServeArgs, SignatureCommand,
};
use crate::extract::{extract, ExtractOptions};
use crate::info::{write_summary, InfoReport};
use crate::install::{self, host::RealHost, run::InstallOptions};
use crate::intercept::{serve_proxy, Interceptor, ProxyOptions};
use crate::progress::bytes_bar;
use crate::registry::{serve, shutdown_signal, Pages, Registry, ServeOptions};
use crate::selfexe::InstallerFile;
use crate::sys::Statvfs;
use crate::{list, signature, verify, Error, Result};
use airlock_payload::human_bytes;

/// Runs `cli` against the running installer (or `AIRLOCK_INSTALLER`), writing results to
/// `out`. `program` is how the user called us, for usage lines.
pub fn run(cli: &Cli, program: &str, out: &mut dyn Write) -> Result<()> {
    // The map lives as long as the process: leaked on purpose, so the registry can hand out
    // slices of it as `'static` response bodies (no copy). One command runs per process,
    // and the kernel unmaps the file when it exits.
    let file: &'static InstallerFile = Box::leak(Box::new(InstallerFile::open_self()?));
    if let Some(Command::Copy(a)) = &cli.command {
        return copy_to(file, a, cli.quiet, out);
    }
    let pages = Pages {
        populate: Box::leak(Box::new(move |part: &[u8]| file.populate(part))),
        release: Box::leak(Box::new(move |part: &[u8]| file.release(part))),
    };
    run_on(
        cli,
        file.bytes(),
        file.elf_end(),
        file.path(),
        program,
        pages,
        out,
    )
}

/// Runs `cli` against the installer in `bytes` (the whole file, opened from `path`).
/// `'static` because `registry serve` serves slices of it for the life of the process.
pub fn run_on(
    cli: &Cli,
    bytes: &'static [u8],
    elf_end: Option<u64>,
    path: &Path,
    program: &str,
    pages: Pages,
    out: &mut dyn Write,
) -> Result<()> {
    let installer = Installer::open(bytes, elf_end)?;
    match &cli.command {
        None => write_summary(&installer, program, out),
        Some(Command::Info(a)) => {
            let report = InfoReport::new(&installer, path)?;
            if a.json {
                report.write_json(out)
            } else {
                report.write_text(out)
            }
        }
        Some(Command::List(a)) => {
            let payload = installer.load_index()?;
            if a.json {
                list::write_json(payload.index(), out)
            } else {
                list::write_text(payload.index(), out)
            }
        }
        Some(Command::Verify(a)) => {
            // Keys first: a bad key file is a usage problem, found before the long check.
            let keys = load_keys(&a.keys)?;
            let bar = bytes_bar(0, "verify", cli.quiet);
            verify::verify(&installer, a.deep, &bar, pages.release, out)?;
            if !keys.is_empty() {
                for s in signature::check(&installer, &keys, "--key")? {
                    writeln!(
                        out,
                        "good signature by key {}: {}",
                        s.key_id, s.trusted_comment
                    )
                    .map_err(Error::Output)?;
                }
            }
            Ok(())
        }
        Some(Command::Sbom(a)) => crate::sbom::write_sbom(&installer, a.output.as_deref(), out),
        Some(Command::Signature(SignatureCommand::Export { output })) => {
            for path in signature::export(&installer, output)? {
                if !cli.quiet {
                    writeln!(out, "wrote {}", path.display()).map_err(Error::Output)?;
                }
            }
            Ok(())
        }
        Some(Command::Extract(a)) => {
            signature::enforce_policy(&installer, Path::new("/"), &[])?;
            let payload = installer.load_index()?;
            let bar = bytes_bar(0, "extract", cli.quiet);
            let opts = ExtractOptions {
                target: &a.target,
                paths: &a.paths,
                space: &Statvfs,
                bar: &bar,
                release: pages.release,
            };
            let summary = extract(&installer, &payload, &opts)?;
            if !cli.quiet {
                writeln!(
                    out,
                    "extracted {} entries ({} files, {}) into {}",
                    summary.entries,
                    summary.files,
                    human_bytes(summary.bytes),
                    a.target.display()
                )
                .map_err(Error::Output)?;
            }
            Ok(())
        }
        Some(Command::Registry(RegistryCommand::Serve(a))) => {
            signature::enforce_policy(&installer, Path::new("/"), &[])?;
            serve_registry(&installer, a, pages, out)
        }
        Some(Command::Install(a)) => {
            let keys = load_keys(&a.keys)?;
            let root = a.root.as_deref().unwrap_or(Path::new("/"));
            signature::enforce_policy(&installer, root, &keys)?;
            install(&installer, a, path, cli.quiet, pages, out)
        }
        Some(Command::Registry(RegistryCommand::Push(a))) => {
            signature::enforce_policy(&installer, Path::new("/"), &[])?;
            push_registry(&installer, a, cli.quiet, out)
        }
        // `run` handles it: it needs the mapped file's parts, not only its bytes.
        Some(Command::Copy(_)) => Err(crate::copy::CopyError::NoFile.into()),
        Some(Command::Deploy(a)) => {
            signature::enforce_policy(&installer, Path::new("/"), &[])?;
            let inventory = crate::deploy::Inventory::load(&a.ssh.inventory)
                .map_err(crate::deploy::DeployError::from)?;
            let opts = crate::deploy::DeployOptions {
                inventory: &inventory,
                installer: &installer,
                installer_path: path,
                ssh: ssh_options(&a.ssh),
                fanout: a.fanout as usize,
                dry_run: a.dry_run,
                limit_rate: a.limit_rate,
            };
            crate::deploy::deploy(&opts, out)
        }
        Some(Command::Undeploy(a)) => {
            let inventory = crate::deploy::Inventory::load(&a.ssh.inventory)
                .map_err(crate::deploy::DeployError::from)?;
            crate::deploy::undeploy(&inventory, &installer, &ssh_options(&a.ssh), out)
        }
        Some(Command::Uninstall(a)) => install::run::uninstall(
            &installer.meta().name,
            a.root.as_deref(),
            cli.quiet,
            &RealHost,
            out,
        ),
    }
}

/// `copy --to`: needs the parts and the page release of the file, not only its bytes.
fn copy_to(
    file: &InstallerFile,
    args: &crate::cli::CopyArgs,
    quiet: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let split = args
        .split
        .as_deref()
        .map(crate::copy::parse_split)
        .transpose()?;
    let bar = bytes_bar(0, "copy", quiet);
    let report = crate::copy::copy(
        file,
        &crate::copy::CopyOptions {
            to: &args.to,
            split,
            space: &Statvfs,
            bar: &bar,
        },
    )?;
    if !quiet {
        let names: Vec<String> = report
            .parts
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        writeln!(
            out,
            "copied {} in {} part{}{} ({} written, {} already there): {}",
            human_bytes(report.len),
            report.parts.len(),
            if report.parts.len() == 1 { "" } else { "s" },
            if report.fat { ", FAT filesystem" } else { "" },
            report.written,
            report.kept,
            names.join(", ")
        )
        .map_err(Error::Output)?;
    }
    // The whole point of the command: said even with --quiet.
    writeln!(out, "verified from the medium: safe to eject").map_err(Error::Output)?;
    Ok(())
}

/// The ssh options of `deploy` and `undeploy` (the control folder is made per run).
fn ssh_options(a: &crate::cli::SshArgs) -> crate::deploy::SshOptions {
    crate::deploy::SshOptions {
        program: "ssh".into(),
        accept_new_host_keys: a.accept_new_host_keys,
        config: a.ssh_config.clone(),
        control_dir: std::path::PathBuf::new(),
        connect_timeout: a.connect_timeout,
    }
}

/// The keys of `--key` and `--key-dir`.
fn load_keys(args: &KeyArgs) -> Result<Vec<signature::TrustedKey>> {
    let mut keys = args
        .keys
        .iter()
        .map(|k| signature::load_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(dir) = &args.key_dir {
        keys.extend(signature::load_key_dir(dir)?);
    }
    Ok(keys)
}

/// `install`: asks for confirmation only without `--yes` and with a terminal on stdin.
fn install(
    installer: &Installer<'static>,
    args: &InstallArgs,
    path: &Path,
    quiet: bool,
    pages: Pages,
    out: &mut dyn Write,
) -> Result<()> {
    let ask = |out: &mut dyn Write| -> Result<bool> {
        write!(out, "Proceed? [y/N] ")
            .and_then(|()| out.flush())
            .map_err(Error::Output)?;
        let mut answer = String::new();
        io::stdin().read_line(&mut answer).map_err(Error::Prompt)?;
        Ok(matches!(
            answer.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
    };
    let interactive = !args.yes && !args.dry_run && io::stdin().is_terminal();
    let bar = bytes_bar(0, "files", quiet);
    let site = match &args.registry {
        Some(url) => Some(site_install(args, url)?),
        None => None,
    };
    // The password is read before the confirmation question, so stdin is read in one order.
    let push_args = site.as_ref().filter(|_| args.push).map(|_| PushArgs {
        to: args.registry.clone().unwrap_or_default(),
        ca: args.ca.clone(),
        insecure: false,
        flatten: false,
        user: args.user.clone(),
        password_stdin: args.password_stdin,
        jobs: crate::registry::push::DEFAULT_JOBS,
        chunk_size: 64 << 20,
        retries: 5,
        sessions: None,
    });
    let creds = match (&push_args, &site) {
        (Some(p), Some((endpoint, _))) if !args.dry_run => {
            push_credentials(p.user.as_deref(), endpoint)?
        }
        _ => None,
    };
    let push = |out: &mut dyn Write| -> Result<()> {
        match &push_args {
            Some(p) => push_images(installer, p, creds.clone(), quiet, out),
            None => Ok(()),
        }
    };
    let opts = InstallOptions {
        root: args.root.as_deref(),
        listen: args.listen,
        dry_run: args.dry_run,
        quiet,
        installer_path: path,
        confirm: interactive.then_some(&ask as install::run::Confirm<'_>),
        ready_timeout: install::readiness::READY_TIMEOUT,
        bar: &bar,
        release: pages.release,
        mirror_for: args.mirror_for.clone(),
        proxy_listen: args.proxy_listen,
        restart_runtimes: args.restart_runtimes,
        site: site.map(|(_, site)| install::run::SiteInstall {
            push: push_args
                .is_some()
                .then_some(&push as install::run::PushToSite<'_>),
            ..site
        }),
        keep_previous: args.keep_previous,
        allow_downgrade: args.allow_downgrade,
    };
    install::run::install(installer, &opts, &RealHost, out)
}

/// `--registry URL [--ca FILE]`: the site registry's address and CA, checked before
/// anything is done.
fn site_install(
    args: &InstallArgs,
    url: &str,
) -> Result<(
    crate::registry::push::Endpoint,
    install::run::SiteInstall<'static>,
)> {
    let endpoint = crate::registry::push::Endpoint::parse(url)?;
    let ca_pem = match &args.ca {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::SiteCa {
                path: path.clone(),
                why: e.to_string(),
            })?;
            if !text.contains("-----BEGIN CERTIFICATE-----") {
                return Err(Error::SiteCa {
                    path: path.clone(),
                    why: "no PEM certificate in it (no -----BEGIN CERTIFICATE----- line)".into(),
                });
            }
            Some(text)
        }
        None => None,
    };
    let mirror = install::mirror::SiteMirror {
        scheme: endpoint.scheme.clone(),
        authority: endpoint.authority.clone(),
        prefix: endpoint.prefix.clone(),
        ca: None,
    };
    Ok((
        endpoint,
        install::run::SiteInstall {
            mirror,
            ca_pem,
            push: None,
        },
    ))
}

/// `registry serve`: loads (and so checks) the index, binds, prints
/// `serving N images on http://ADDR` as the first line, and serves until SIGTERM or SIGINT.
pub fn serve_registry(
    installer: &Installer<'static>,
    args: &ServeArgs,
    pages: Pages,
    out: &mut dyn Write,
) -> Result<()> {
    let registry = Arc::new(
        Registry::new(installer.load_index()?)
            .with_pages(pages)
            .with_installer_file(installer.bytes()),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Serve {
            step: "start the async runtime",
            source,
        })?;
    runtime.block_on(async {
        let signal = shutdown_signal().map_err(|source| Error::Serve {
            step: "install the SIGTERM and SIGINT handlers",
            source,
        })?;
        // One signal stops both listeners.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let interceptor = match &args.intercept_dir {
            Some(dir) => Some(Arc::new(Interceptor::load_dir(dir)?)),
            None => None,
        };
        let listen_error = |source| Error::Listen {
            addr: args.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        if let Some(pid_file) = &args.pid_file {
            write_pid_file(pid_file).map_err(|source| Error::Serve {
                step: "write the pid file",
                source,
            })?;
        }
        let n = registry.image_count();
        writeln!(
            out,
            "serving {n} image{} on http://{addr}",
            if n == 1 { "" } else { "s" }
        )
        .and_then(|()| out.flush())
        .map_err(Error::Output)?;
        tracing::info!(%addr, images = n, "registry listening");
        let proxy = match (args.intercept, interceptor) {
            (Some(proxy_addr), Some(interceptor)) => {
                let proxy_error = |source| Error::Listen {
                    addr: proxy_addr,
                    source,
                };
                let proxy_listener = tokio::net::TcpListener::bind(proxy_addr)
                    .await
                    .map_err(proxy_error)?;
                let bound = proxy_listener.local_addr().map_err(proxy_error)?;
                let hosts: Vec<&str> = interceptor.hosts().collect();
                writeln!(out, "pull proxy for {} on http://{bound}", hosts.join(", "))
                    .and_then(|()| out.flush())
                    .map_err(Error::Output)?;
                tracing::info!(%bound, hosts = %hosts.join(","), "pull proxy listening");
                Some(tokio::spawn(serve_proxy(
                    proxy_listener,
                    registry.clone(),
                    interceptor,
                    ProxyOptions::default(),
                    stopped(stop_rx.clone()),
                )))
            }
            _ => None,
        };
        serve(
            listener,
            registry,
            ServeOptions::default(),
            stopped(stop_rx),
        )
        .await;
        if let Some(p) = proxy {
            let _ = p.await;
        }
        tracing::info!("registry stopped");
        if let Some(pid_file) = &args.pid_file {
            remove_own_pid_file(pid_file);
        }
        Ok(())
    })
}

/// `registry push`: credentials from `--user`/stdin or the docker config, then
/// [`crate::registry::push::push`]; prints one summary line.
pub fn push_registry(
    installer: &Installer<'static>,
    args: &PushArgs,
    quiet: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let endpoint = crate::registry::push::Endpoint::parse(&args.to)?;
    let creds = push_credentials(args.user.as_deref(), &endpoint)?;
    push_images(installer, args, creds, quiet, out)
}

/// The push credentials: `--user` with the password from the first line of stdin, else the
/// docker config's entry for the registry (or none).
fn push_credentials(
    user: Option<&str>,
    endpoint: &crate::registry::push::Endpoint,
) -> Result<Option<crate::registry::push::auth::Credentials>> {
    use crate::registry::push::{auth, PushError};
    Ok(match user {
        Some(user) => {
            let mut line = String::new();
            io::stdin()
                .read_line(&mut line)
                .map_err(|source| PushError::Credentials {
                    from: "stdin".into(),
                    source,
                })?;
            Some(auth::Credentials {
                user: user.to_owned(),
                password: line.trim_end_matches(['\r', '\n']).to_owned(),
            })
        }
        None => match auth::docker_config_path() {
            Some(p) => auth::from_docker_config(&p, &endpoint.authority)?,
            None => None,
        },
    })
}

/// [`crate::registry::push::push`] of every image to `args.to` with `creds`; prints one
/// summary line.
fn push_images(
    installer: &Installer<'static>,
    args: &PushArgs,
    creds: Option<crate::registry::push::auth::Credentials>,
    quiet: bool,
    out: &mut dyn Write,
) -> Result<()> {
    use crate::registry::push::{self, sessions::Sessions, tls, PushOptions};
    let endpoint = push::Endpoint::parse(&args.to)?;
    let refusal = tls::Refusal::default();
    let config = tls::client_config(args.ca.as_deref(), args.insecure, refusal.clone())?;
    let sessions = match args.sessions.clone().or_else(push::sessions::default_path) {
        Some(p) => Sessions::load(&p),
        None => Sessions::in_memory(),
    };
    let payload = Arc::new(installer.load_index()?);
    let opts = PushOptions {
        flatten: args.flatten,
        jobs: args.jobs,
        chunk: args.chunk_size,
        quiet,
        platform: installer.meta().platform.to_string(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(push::PushError::Runtime)?;
    let target = endpoint.to_string();
    let report = runtime.block_on(async move {
        let client = push::Client::new(endpoint, config, refusal, creds, args.retries);
        push::push(payload, client, sessions, &opts).await
    })?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    if !quiet {
        writeln!(
            out,
            "pushed {} image{} to {target}: {} blob{} uploaded ({}), {} mounted, {} already there; {} manifest{} pushed, {} already there",
            report.images,
            if report.images == 1 { "" } else { "s" },
            report.uploaded,
            if report.uploaded == 1 { "" } else { "s" },
            human_bytes(report.uploaded_bytes),
            report.mounted,
            report.present,
            report.manifests,
            if report.manifests == 1 { "" } else { "s" },
            report.manifests_present,
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

/// Writes this process's pid to `path`: a temp file in the same folder, synced, renamed.
fn write_pid_file(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".airlock-tmp-")
        .tempfile_in(dir)?;
    writeln!(tmp, "{}", std::process::id())?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Removes `path` if it still names this process (a newer daemon may have replaced it).
fn remove_own_pid_file(path: &Path) {
    let ours =
        std::fs::read_to_string(path).is_ok_and(|t| t.trim() == std::process::id().to_string());
    if ours {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("failed to remove the pid file {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{damage_frame, installer_from_tree, make_removable, sample_tree};
    use clap::Parser;

    fn run_args(bytes: &[u8], args: &[&str]) -> (Result<()>, String) {
        let bytes: &'static [u8] = bytes.to_vec().leak();
        let cli =
            Cli::try_parse_from(std::iter::once("demo.run").chain(args.iter().copied())).unwrap();
        let mut out = Vec::new();
        let r = run_on(
            &cli,
            bytes,
            None,
            Path::new("demo.run"),
            "./demo.run",
            Pages::KEEP,
            &mut out,
        );
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn each_command_runs_and_damage_is_a_corrupt_error() {
        let tree = sample_tree();
        let mut bytes = installer_from_tree(tree.path());
        make_removable(tree.path());
        let (r, text) = run_args(&bytes, &[]);
        r.unwrap();
        assert!(text.contains("Usage: ./demo.run <COMMAND>"), "{text}");
        let (r, text) = run_args(&bytes, &["list", "--json"]);
        r.unwrap();
        assert!(text.starts_with("[{"), "{text}");
        let (r, text) = run_args(&bytes, &["-q", "verify"]);
        r.unwrap();
        assert!(text.starts_with("ok: "), "{text}");
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("t");
        let (r, text) = run_args(
            &bytes,
            &["extract", "--target", target.to_str().unwrap(), "etc"],
        );
        r.unwrap();
        assert_eq!(
            text,
            format!(
                "extracted 4 entries (3 files, 24 B) into {}\n",
                target.display()
            )
        );

        damage_frame(&mut bytes, 1);
        let (r, _) = run_args(&bytes, &["-q", "verify"]);
        assert!(r.unwrap_err().is_corrupt());
        let (r, _) = run_args(
            &bytes,
            &[
                "extract",
                "--target",
                out.path().join("u").to_str().unwrap(),
            ],
        );
        assert!(r.unwrap_err().is_corrupt());
        // info reads no content: it still works.
        let (r, _) = run_args(&bytes, &["info"]);
        r.unwrap();
    }

    #[test]
    fn a_truncated_installer_is_a_corrupt_error() {
        let tree = sample_tree();
        let bytes = installer_from_tree(tree.path());
        make_removable(tree.path());
        let (r, _) = run_args(&bytes[..bytes.len() - 100], &["info"]);
        let err = r.unwrap_err();
        assert!(err.is_corrupt(), "{err}");
    }
}
