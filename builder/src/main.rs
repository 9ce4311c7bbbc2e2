//! `airlock`: build single-file air-gap installers, inspect them, and capture what a cluster
//! pulls.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use airlock_builder::build::{self, BuildPlan};
use airlock_builder::capture::{self, CaptureOptions};
use airlock_builder::image::{Mirror, RegistryOptions};
use airlock_builder::sign;
use airlock_builder::split::{self, SplitSize};
use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Build one executable file that carries a Kubernetes distribution, its binaries, its
/// images and any extra files, and installs them with no network.
#[derive(Parser)]
#[command(name = "airlock", version, propagate_version = true)]
struct Cli {
    /// Print nothing but errors (and the requested output).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print debug logs (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an installer from a spec (airlock.yaml).
    Build {
        /// The spec; relative paths in it are relative to its folder.
        #[arg(short = 'f', long = "file", default_value = "airlock.yaml")]
        spec: PathBuf,
        /// The installer to write (atomically: a temporary file beside it, then a rename).
        #[arg(short, long)]
        output: PathBuf,
        /// The stub program to put in front of the payload (default: AIRLOCK_STUB, else
        /// `airlock-stub` beside this program). It must be a static ELF for the platform.
        #[arg(long)]
        stub: Option<PathBuf>,
        /// zstd compression level (1-19).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
        level: i32,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Fetch the images of upstream registry HOST from URL instead (repeatable), e.g.
        /// docker.io=http://127.0.0.1:5000; `http://` means plain HTTP.
        #[arg(long = "registry-mirror", value_name = "HOST=URL")]
        registry_mirror: Vec<Mirror>,
        /// Also take every image recorded in capture folder DIR (repeatable); entries of the
        /// spec's `images` that name the same reference win.
        #[arg(long = "from-capture", value_name = "DIR")]
        from_capture: Vec<PathBuf>,
        /// Fail when image discovery (`discover:`) warns or leaves references unresolved.
        #[arg(long)]
        strict: bool,
        /// Sign the installer with this minisign secret key (repeatable: one signature per
        /// key). An encrypted key's password comes from AIRLOCK_KEY_PASSWORD or a prompt.
        #[arg(long = "sign", value_name = "KEY")]
        sign: Vec<PathBuf>,
        /// Read every source file and compress every frame, neither using nor filling the
        /// build cache (the output is the same bytes either way).
        #[arg(long)]
        no_cache: bool,
        /// After the build, drop the least recently used frames of the build cache beyond
        /// SIZE (e.g. 512M, 10G).
        #[arg(long, value_name = "SIZE", default_value = "10G", value_parser = parse_size)]
        cache_max: u64,
        /// Split the installer into parts for a filesystem with a file-size limit: `fat32`
        /// (parts of 4 GiB - 4096 bytes) or SIZE (rounded down to a multiple of 4096). Writes
        /// OUTPUT (the program and the start of the payload), OUTPUT.002, OUTPUT.003, ...
        #[arg(long, value_name = "fat32|SIZE")]
        split: Option<SplitSize>,
    },
    /// Split an existing installer into parts (FILE, FILE.002, ...): `cat` of the parts is
    /// the file again. Each part is written under a temporary name and renamed; FILE is cut
    /// down last.
    Split {
        /// The installer.
        file: PathBuf,
        /// The part size: `fat32` or SIZE (rounded down to a multiple of 4096).
        #[arg(long, value_name = "fat32|SIZE")]
        size: SplitSize,
    },
    /// Join a split installer (FILE, FILE.002, ...) into one file, checked before it is
    /// renamed into place. With `-o FILE` the other parts are removed afterwards.
    Join {
        /// The first part.
        file: PathBuf,
        /// The joined installer to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Copy an installer to removable media and read it back: FILE's parts (split when DIR
    /// is on FAT32) are written, synced, read back from the medium and verified frame by
    /// frame. Runs `airlock-stub copy` (AIRLOCK_STUB, else beside this program) on FILE.
    Copy {
        /// The installer (or the first part of a split one).
        file: PathBuf,
        /// The folder to copy into (e.g. a mounted USB stick).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Split into parts of this size even where the filesystem does not need it.
        #[arg(long, value_name = "fat32|SIZE")]
        split: Option<String>,
    },
    /// Make a minisign key pair for signing installers: PREFIX.key (secret, mode 0600) and
    /// PREFIX.pub. The secret key is encrypted with a password from AIRLOCK_KEY_PASSWORD or
    /// asked for on the terminal, unless --no-password.
    Keygen {
        /// Path prefix of the two files, e.g. `release` for release.key and release.pub.
        #[arg(short, long, value_name = "PREFIX")]
        output: PathBuf,
        /// Store the secret key unencrypted (for keys kept in a secrets store).
        #[arg(long)]
        no_password: bool,
    },
    /// Sign an existing installer in place (atomically: temporary file + rename). Only the
    /// signature section after the installer changes; a key that signed before has its
    /// signature replaced, others are kept. A damaged installer is refused (exit 3).
    Sign {
        /// The installer.
        file: PathBuf,
        /// A minisign secret key (repeatable).
        #[arg(short, long = "key", value_name = "KEY", required = true)]
        key: Vec<PathBuf>,
    },
    /// Show or trim the build cache (AIRLOCK_CACHE_DIR, else ~/.cache/airlock).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Run a pull-through registry that records every image pulled through it into DIR, for
    /// `airlock build --from-capture DIR` (or `images: - from: capture:DIR`).
    Capture {
        /// Where to listen; port 0 picks a free port (the address is printed).
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: std::net::SocketAddr,
        /// The capture folder (created if missing; an existing capture is added to).
        #[arg(long)]
        out: PathBuf,
        /// Fetch upstream HOST from URL instead (repeatable), e.g.
        /// docker.io=http://127.0.0.1:5001; `http://` means plain HTTP.
        #[arg(long = "upstream", value_name = "HOST=URL")]
        upstream: Vec<Mirror>,
        /// Seconds a connection to an upstream may take before the client gets a 502.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
        connect_timeout: u64,
    },
    /// Print the images a build would capture and where each came from: `images:` joined
    /// with the references `discover:` finds in Kubernetes YAML, Helm charts and image lists,
    /// minus `exclude:` (exact references, or patterns such as `docker.io/library/*` where
    /// `*` matches any characters of the normalised reference).
    Images {
        /// The spec; relative paths in it are relative to its folder.
        #[arg(short = 'f', long = "file", default_value = "airlock.yaml")]
        spec: PathBuf,
        /// Print JSON: images with their sources, excluded, unresolved, warnings.
        #[arg(long)]
        json: bool,
        /// Fail (exit 1) when discovery warns (unparsable YAML, unreadable files, missing
        /// subcharts) or leaves references unresolved.
        #[arg(long)]
        strict: bool,
        /// Render charts with this helm (default: AIRLOCK_HELM, else `helm` on PATH; without
        /// one, charts are analysed statically).
        #[arg(long, value_name = "PATH", conflicts_with = "no_helm")]
        helm: Option<PathBuf>,
        /// Analyse every chart statically, even when a helm is found.
        #[arg(long)]
        no_helm: bool,
        /// Also list the images that the values of rendered charts name but their rendering
        /// does not use (disabled components); they are not captured.
        #[arg(long)]
        all_values: bool,
    },
    /// Show what an installer holds, without running it.
    Inspect {
        /// The installer.
        file: PathBuf,
        /// Print JSON.
        #[arg(long, conflicts_with = "sbom")]
        json: bool,
        /// Print the installer's SBOM (SPDX 2.3 JSON) instead of its summary.
        #[arg(long)]
        sbom: bool,
        /// With --sbom: write it to FILE instead of standard output.
        #[arg(short, long, value_name = "FILE", requires = "sbom")]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Print what the build cache holds: frames, stat files, registry blobs.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the least recently used frames beyond SIZE (without --max: every frame).
    Prune {
        /// Keep at most this many bytes of frames (e.g. 2G).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max: Option<u64>,
    },
}

fn parse_size(text: &str) -> Result<u64, airlock_builder::cache::Error> {
    airlock_builder::cache::parse_size(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            let corrupt = err
                .downcast_ref::<build::Error>()
                .is_some_and(build::is_corrupt)
                || err
                    .downcast_ref::<airlock_builder::sign::Error>()
                    .is_some_and(|e| e.is_corrupt())
                || err
                    .downcast_ref::<split::Error>()
                    .is_some_and(|e| e.is_corrupt());
            ExitCode::from(if corrupt { 3 } else { 1 })
        }
    }
}

fn init_logging(verbose: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if verbose { "debug" } else { "warn" })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Build {
            spec,
            output,
            stub,
            level,
            json,
            registry_mirror,
            from_capture,
            strict,
            sign,
            no_cache,
            cache_max,
            split,
        } => {
            let plan = BuildPlan {
                sign: sign.clone(),
                from_capture: from_capture.clone(),
                spec: spec.clone(),
                output: output.clone(),
                stub: stub.clone(),
                level: *level,
                progress: !cli.quiet && std::io::stderr().is_terminal(),
                registry: RegistryOptions {
                    mirrors: registry_mirror.clone(),
                    cache_dir: RegistryOptions::default_cache_dir(),
                    auth_file: RegistryOptions::default_auth_file(),
                    connect_timeout: None,
                },
                strict: *strict,
                cache: !*no_cache,
                cache_max: Some(*cache_max),
                split: *split,
            };
            let report = build::build(&plan)?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serializes")
                );
            } else if !cli.quiet {
                for note in &report.notes {
                    println!("{note}");
                }
                println!("wrote {}\n{}", report.output.display(), report.summary);
                if report.parts.len() > 1 {
                    println!(
                        "split into {} parts: {}",
                        report.parts.len(),
                        join_paths(&report.parts)
                    );
                }
                println!(
                    "frames: {} reused, {} compressed",
                    report.frames_reused, report.frames_encoded
                );
            }
        }
        Command::Keygen {
            output,
            no_password,
        } => {
            let password = sign::NewPassword::from_env(*no_password)?;
            let report = sign::keygen(output, password)?;
            if !cli.quiet {
                println!(
                    "wrote {} (secret, keep it safe) and {}\nkey id: {}",
                    report.secret.display(),
                    report.public.display(),
                    report.key_id
                );
            }
        }
        Command::Sign { file, key } => {
            let keys = key
                .iter()
                .map(|k| sign::load_secret_key(k))
                .collect::<Result<Vec<_>, _>>()?;
            let timestamp = match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(s) if !s.trim().is_empty() => s.trim().parse()?,
                _ => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs(),
            };
            let report = sign::sign_file(file, &keys, timestamp)?;
            if !cli.quiet {
                println!(
                    "signed {} with {} ({} signature{} in the file)",
                    report.file.display(),
                    report.signed_by.join(", "),
                    report.signatures,
                    if report.signatures == 1 { "" } else { "s" }
                );
            }
        }
        Command::Capture {
            listen,
            out,
            upstream,
            connect_timeout,
        } => {
            let summary = capture::run(&CaptureOptions {
                listen: *listen,
                out: out.clone(),
                upstreams: upstream.clone(),
                auth_file: RegistryOptions::default_auth_file(),
                connect_timeout: Duration::from_secs(*connect_timeout),
            })?;
            if !cli.quiet {
                println!(
                    "stopped: {} references and {} blobs in {}",
                    summary.references,
                    summary.blobs,
                    summary.out.display()
                );
            }
        }
        Command::Images {
            spec,
            json,
            strict,
            helm,
            no_helm,
            all_values,
        } => {
            let spec = airlock_builder::spec::Spec::from_path(spec)?;
            // Unresolved references are part of the output; warnings go to stderr.
            let options = airlock_builder::discover::Options {
                helm: helm.clone(),
                no_helm: *no_helm,
                all_values: *all_values,
            };
            let plan = airlock_builder::discover::plan_with(&spec, &options)?;
            for warning in &plan.warnings {
                eprintln!("warning: {warning}");
            }
            if *strict {
                plan.check_strict()?;
            }
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&plan).expect("the plan serializes")
                );
            } else {
                print!("{plan}");
            }
        }
        Command::Cache { command } => {
            let dir = RegistryOptions::default_cache_dir();
            match command {
                CacheCommand::Info { json } => {
                    let info = airlock_builder::cache::info(&dir)?;
                    if *json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&info).expect("cache info serializes")
                        );
                    } else {
                        println!("{info}");
                    }
                }
                CacheCommand::Prune { max } => {
                    let r = airlock_builder::cache::prune(&dir, max.unwrap_or(0))?;
                    if !cli.quiet {
                        println!(
                            "removed {} frames ({}), kept {} ({})",
                            r.removed,
                            airlock_payload::human_bytes(r.freed),
                            r.kept,
                            airlock_payload::human_bytes(r.kept_bytes)
                        );
                    }
                }
            }
        }
        Command::Split { file, size } => {
            let parts = split::split_file(file, *size)?;
            if !cli.quiet {
                println!("split into {} parts: {}", parts.len(), join_paths(&parts));
            }
        }
        Command::Join { file, output } => {
            let len = split::join_parts(file, output)?;
            if !cli.quiet {
                println!("wrote {} ({len} bytes)", output.display());
            }
        }
        Command::Copy { file, to, split } => {
            let stub = build::default_stub()?;
            let mut cmd = std::process::Command::new(&stub);
            cmd.env("AIRLOCK_INSTALLER", file)
                .arg("copy")
                .arg("--to")
                .arg(to);
            if let Some(size) = split {
                cmd.arg("--split").arg(size);
            }
            if cli.quiet {
                cmd.arg("--quiet");
            }
            let status = cmd
                .status()
                .map_err(|e| anyhow::anyhow!("failed to run {}: {e}", stub.display()))?;
            if !status.success() {
                // The stub printed its error; pass its exit code on (3: corrupt).
                std::process::exit(status.code().unwrap_or(1));
            }
        }
        Command::Inspect {
            file,
            sbom: true,
            output,
            ..
        } => {
            let doc = build::read_sbom(file)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} carries no SBOM (it was built before airlock embedded one)",
                    file.display()
                )
            })?;
            match output {
                Some(path) => std::fs::write(path, &doc)
                    .with_context(|| format!("failed to write {}", path.display()))?,
                None => std::io::Write::write_all(&mut std::io::stdout().lock(), &doc)
                    .context("failed to write the sbom")?,
            }
        }
        Command::Inspect { file, json, .. } => {
            let summary = build::inspect(file)?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).expect("summary serializes")
                );
            } else {
                println!("{summary}");
            }
        }
    }
    Ok(())
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
