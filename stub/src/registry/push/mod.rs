//! `registry push`: copies every captured image into a site registry (Harbor, Nexus,
//! Artifactory, distribution) under its original name, byte-identical.
//!
//! Why: many air-gapped sites already run a registry and want the installer's images in it.
//! What happens, in order:
//!
//! 1. **Plan** ([`plan`]): each image gets `<prefix>/<host>/<repository>` (or
//!    `<prefix>/<repository>` with `--flatten`, where two images meeting on one name is an
//!    error naming both), by [`airlock_oci::name::site_repository`].
//! 2. **Blobs**, `jobs` at a time, each distinct digest once: `HEAD` in each repository that
//!    needs it (present: skipped); else mounted from a repository this run already has it in
//!    (`POST ?mount=&from=`); else uploaded in chunks (`POST`, `PATCH` with `Content-Range`,
//!    `PUT ?digest=`). Failed chunks are retried after asking the registry how far it got;
//!    an upload session it forgot (404) restarts. Unfinished sessions are recorded
//!    ([`sessions`]) so a re-run after a kill continues them.
//! 3. **Manifests**, children before the index that lists them, the tag last; each `HEAD`ed
//!    first and skipped when the registry already has our digest. The registry's
//!    `Docker-Content-Digest` must equal ours, else the push stops before the parent.
//!
//! Blob bytes stream from the mapped installer with every frame checked ([`super::body`]).

pub mod auth;
pub mod client;
mod error;
pub mod sessions;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use airlock_oci::headers::CONTENT_DIGEST;
use airlock_oci::name::site_repository;
use airlock_payload::{is_valid_repository, Blob, Image, Payload, Sha256Digest};
use bytes::Bytes;
use http::{header, Method, StatusCode};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Semaphore;

use client::{Call, Content};
pub use client::{Client, Endpoint};
pub use error::PushError;
use sessions::Sessions;

/// Default upload chunk: large enough that per-request costs vanish, small enough that a
/// retried chunk is cheap and registries that cap request bodies accept it.
pub const DEFAULT_CHUNK: u64 = 64 << 20;
/// Default number of blobs pushed at once.
pub const DEFAULT_JOBS: usize = 4;

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Drop the upstream host from names.
    pub flatten: bool,
    /// Blobs pushed at once (at least 1).
    pub jobs: usize,
    /// Bytes per `PATCH`.
    pub chunk: u64,
    /// No progress bars.
    pub quiet: bool,
    /// The installer's platform (`linux/amd64`): the manifest a partial index is replaced by.
    pub platform: String,
}

/// What a push did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// Images pushed (or found complete).
    pub images: usize,
    /// Blobs uploaded.
    pub uploaded: u64,
    /// Bytes sent in blob uploads.
    pub uploaded_bytes: u64,
    /// Blobs mounted from another repository.
    pub mounted: u64,
    /// Blobs the registry already had.
    pub present: u64,
    /// Manifests pushed.
    pub manifests: u64,
    /// Manifests the registry already had.
    pub manifests_present: u64,
    /// HTTP requests sent.
    pub requests: u64,
    /// What was pushed differently than captured (an index with platforms not held).
    pub warnings: Vec<String>,
}

/// An image and the repository it goes to.
#[derive(Debug, Clone)]
pub struct Planned<'a> {
    /// The captured image.
    pub image: &'a Image,
    /// Its repository on the target.
    pub repo: String,
}

/// Each image's target repository below `prefix`; an error for an invalid name or two
/// images (different upstreams) landing on one name and tag.
pub fn plan<'a>(
    images: &'a [Image],
    prefix: &str,
    flatten: bool,
) -> Result<Vec<Planned<'a>>, PushError> {
    let mut seen: HashMap<(String, String), &Image> = HashMap::new();
    let mut out = Vec::new();
    for image in images {
        let repo = site_repository(prefix, &image.registry, &image.repository, flatten);
        if !is_valid_repository(&repo) {
            return Err(PushError::BadName {
                image: image.reference(),
                target: repo,
            });
        }
        let tag = image
            .tag
            .clone()
            .unwrap_or_else(|| image.digest.to_string());
        if let Some(other) = seen.get(&(repo.clone(), tag.clone())) {
            if other.digest != image.digest || other.registry != image.registry {
                return Err(PushError::Collision {
                    first: other.reference(),
                    second: image.reference(),
                    target: format!("{repo}:{tag}"),
                });
            }
        }
        seen.insert((repo.clone(), tag), image);
        out.push(Planned { image, repo });
    }
    Ok(out)
}

/// Everything the blob and manifest tasks share.
struct Job {
    client: Client,
    payload: Arc<Payload<'static>>,
    sessions: Sessions,
    chunk: u64,
    total: ProgressBar,
    uploaded: AtomicU64,
    uploaded_bytes: AtomicU64,
    mounted: AtomicU64,
    present: AtomicU64,
}

fn scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// Pushes every image of `payload` through `client` (see the module docs). The first
/// error stops the push; what was pushed stays.
pub async fn push(
    payload: Arc<Payload<'static>>,
    client: Client,
    sessions: Sessions,
    opts: &PushOptions,
) -> Result<PushReport, PushError> {
    let images = payload.index().images().to_vec();
    let planned = plan(&images, &client.endpoint.prefix, opts.flatten)?;

    // Each distinct blob once, with the repositories (in plan order) that need it.
    let mut blobs: BTreeMap<Sha256Digest, (Vec<String>, Vec<usize>)> = BTreeMap::new();
    for (i, p) in planned.iter().enumerate() {
        for d in &p.image.blobs {
            let (repos, owners) = blobs.entry(*d).or_default();
            if !repos.contains(&p.repo) {
                repos.push(p.repo.clone());
            }
            owners.push(i);
        }
    }
    let index = payload.index();
    let total_bytes: u64 = blobs
        .keys()
        .filter_map(|d| index.blob(d))
        .map(|b| b.size)
        .sum();

    let multi = if opts.quiet {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    } else {
        MultiProgress::with_draw_target(ProgressDrawTarget::stderr())
    };
    let total = multi.add(crate::progress::bytes_bar(total_bytes, "total", opts.quiet));
    let per_image: Vec<ProgressBar> = planned
        .iter()
        .map(|p| {
            let n = p.image.blobs.len() + p.image.manifests.len();
            let bar = multi.insert_before(&total, ProgressBar::new(n as u64));
            bar.set_style(
                ProgressStyle::with_template("{pos:>4}/{len:4} {wide_msg}")
                    .expect("the template is valid"),
            );
            bar.set_message(p.image.reference());
            bar
        })
        .collect();

    let job = Arc::new(Job {
        client,
        payload: payload.clone(),
        sessions,
        chunk: opts.chunk.max(1),
        total,
        uploaded: AtomicU64::new(0),
        uploaded_bytes: AtomicU64::new(0),
        mounted: AtomicU64::new(0),
        present: AtomicU64::new(0),
    });

    let gate = Arc::new(Semaphore::new(opts.jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (digest, (repos, owners)) in blobs {
        let Some(blob) = index.blob(&digest).cloned() else {
            return Err(PushError::Read {
                digest: digest.to_string(),
                source: std::io::Error::other("the installer's index has no such blob"),
            });
        };
        let (job, gate) = (job.clone(), gate.clone());
        let bars: Vec<ProgressBar> = owners.iter().map(|i| per_image[*i].clone()).collect();
        let names = owner_names(&planned, &owners);
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("never closed");
            let r = job.push_blob(&blob, &repos).await;
            for b in &bars {
                b.inc(1);
            }
            r.map_err(|e| PushError::Blob {
                image: names,
                digest: digest.to_string(),
                source: Box::new(e),
            })
        });
    }
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(PushError::Runtime(std::io::Error::other(e.to_string())));
            }
        }
    }

    let mut manifests = 0;
    let mut manifests_present = 0;
    let mut warnings = Vec::new();
    for (p, bar) in planned.iter().zip(&per_image) {
        // Children (platform manifests) before the index; the top-level one by tag, last.
        let (top, children) = p
            .image
            .manifests
            .split_first()
            .expect("an image has a top-level manifest");
        // An index listing platforms the installer does not hold (the build kept only its
        // own) cannot be stored: registries refuse an index whose children are missing.
        // The tag then names the kept platform's manifest, unchanged.
        let missing = job.missing_children(top, p.image)?;
        let tag_target = if missing > 0 && !children.is_empty() {
            let kept = children
                .iter()
                .find(|c| c.platform.as_deref() == Some(opts.platform.as_str()))
                .unwrap_or(&children[0]);
            warnings.push(format!(
                "{}: the index lists {missing} platform(s) this installer does not hold; \
                 {} is tagged with its {} manifest {} instead",
                p.image.reference(),
                p.repo,
                kept.platform.as_deref().unwrap_or("kept"),
                kept.digest
            ));
            Some(kept)
        } else {
            None
        };
        let order: Vec<(&airlock_payload::ManifestRef, String)> = children
            .iter()
            .map(|m| (m, m.digest.to_string()))
            .chain(std::iter::once(match tag_target {
                Some(kept) => (
                    kept,
                    p.image
                        .tag
                        .clone()
                        .unwrap_or_else(|| kept.digest.to_string()),
                ),
                None => (
                    top,
                    p.image
                        .tag
                        .clone()
                        .unwrap_or_else(|| top.digest.to_string()),
                ),
            }))
            .collect();
        for (m, reference) in order {
            let pushed = job
                .push_manifest(&p.repo, &reference, &m.digest, &m.media_type)
                .await
                .map_err(|e| PushError::Manifest {
                    image: p.image.reference(),
                    digest: m.digest.to_string(),
                    source: Box::new(e),
                })?;
            if pushed {
                manifests += 1;
            } else {
                manifests_present += 1;
            }
            bar.inc(1);
        }
        bar.finish();
    }
    job.total.finish_and_clear();
    let _ = multi.clear();
    Ok(PushReport {
        images: planned.len(),
        uploaded: job.uploaded.load(Ordering::Relaxed),
        uploaded_bytes: job.uploaded_bytes.load(Ordering::Relaxed),
        mounted: job.mounted.load(Ordering::Relaxed),
        present: job.present.load(Ordering::Relaxed),
        manifests,
        manifests_present,
        requests: job.client.requests.load(Ordering::Relaxed),
        warnings,
    })
}

/// The images that hold a blob, for messages: one, or the first and how many more.
fn owner_names(planned: &[Planned<'_>], owners: &[usize]) -> String {
    let mut names: Vec<String> = owners
        .iter()
        .map(|i| planned[*i].image.reference())
        .collect();
    names.dedup();
    match names.len() {
        0 => String::new(),
        1 => names.remove(0),
        n => format!("{} (and {} more)", names[0], n - 1),
    }
}

impl Job {
    fn url(&self, path: &str) -> String {
        self.client.endpoint.url(path)
    }

    fn endpoint_key(&self) -> String {
        self.client.endpoint.url("")
    }

    /// Makes `blob` present in every one of `repos`.
    async fn push_blob(&self, blob: &Blob, repos: &[String]) -> Result<(), PushError> {
        let mut source: Option<&str> = None;
        for repo in repos {
            let counted = source.is_some();
            if self.has_blob(repo, &blob.digest).await? {
                self.present.fetch_add(1, Ordering::Relaxed);
                if !counted {
                    self.total.inc(blob.size);
                }
            } else {
                let mut start = None;
                if let Some(from) = source {
                    match self.mount(repo, &blob.digest, from).await? {
                        None => {
                            self.mounted.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Some(location) => start = Some(location),
                    }
                }
                self.upload(repo, blob, start, !counted).await?;
                self.uploaded.fetch_add(1, Ordering::Relaxed);
            }
            source.get_or_insert(repo.as_str());
        }
        Ok(())
    }

    async fn has_blob(&self, repo: &str, digest: &Sha256Digest) -> Result<bool, PushError> {
        let call = Call::new(
            Method::HEAD,
            self.url(&format!("/v2/{repo}/blobs/{digest}")),
            vec![scope(repo)],
        );
        let a = self.client.send(&call, true).await?;
        match a.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(a.error(&call)),
        }
    }

    /// Mounts `digest` from `from` into `repo`: `None` when mounted, else the upload
    /// session the registry opened instead.
    async fn mount(
        &self,
        repo: &str,
        digest: &Sha256Digest,
        from: &str,
    ) -> Result<Option<String>, PushError> {
        let call = Call::new(
            Method::POST,
            self.url(&format!(
                "/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
            )),
            vec![scope(repo), format!("repository:{from}:pull")],
        );
        let a = self.client.send(&call, true).await?;
        match a.status {
            StatusCode::CREATED => Ok(None),
            StatusCode::ACCEPTED => Ok(Some(self.location(&a, &call)?)),
            _ => Err(a.error(&call)),
        }
    }

    fn location(&self, a: &client::Answer, call: &Call) -> Result<String, PushError> {
        a.header(header::LOCATION)
            .map(|l| self.client.endpoint.resolve(l))
            .ok_or_else(|| PushError::Protocol {
                step: call.step(),
                why: format!("a {} answer without Location", a.status.as_u16()),
            })
    }

    /// A new upload session in `repo`.
    async fn open(&self, repo: &str) -> Result<String, PushError> {
        let call = Call::new(
            Method::POST,
            self.url(&format!("/v2/{repo}/blobs/uploads/")),
            vec![scope(repo)],
        );
        let a = self.client.send(&call, true).await?;
        if a.status != StatusCode::ACCEPTED {
            return Err(a.error(&call));
        }
        self.location(&a, &call)
    }

    /// How far an upload session got: its new location and the next offset, or `None` when
    /// the registry no longer knows it.
    async fn status(&self, repo: &str, location: &str) -> Result<Option<(String, u64)>, PushError> {
        let call = Call::new(Method::GET, location.to_owned(), vec![scope(repo)]);
        let a = self.client.send(&call, true).await?;
        match a.status {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::ACCEPTED => {
                // `Range: 0-<last byte>`; distribution says `0-0` for nothing received yet.
                let next = a
                    .header(header::RANGE)
                    .and_then(|r| r.trim_start_matches("bytes=").split_once('-'))
                    .and_then(|(_, end)| end.parse::<u64>().ok())
                    .map_or(0, |end| if end == 0 { 0 } else { end + 1 });
                let loc = a
                    .header(header::LOCATION)
                    .map(|l| self.client.endpoint.resolve(l))
                    .unwrap_or_else(|| location.to_owned());
                Ok(Some((loc, next)))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(a.error(&call)),
        }
    }

    /// Uploads `blob` into `repo` in chunks, from `start` (a session a mount opened), a
    /// recorded session, or a new one. `count` adds the bytes to the total bar.
    async fn upload(
        &self,
        repo: &str,
        blob: &Blob,
        start: Option<String>,
        count: bool,
    ) -> Result<(), PushError> {
        let digest = blob.digest.to_string();
        let endpoint = self.endpoint_key();
        let resumed = match (start, self.sessions.get(&endpoint, repo, &digest)) {
            (Some(l), _) => Some((l, 0)),
            (None, Some(l)) => match self.status(repo, &l).await? {
                Some((loc, next)) if next <= blob.size => {
                    tracing::info!("resuming the upload of {digest} into {repo} at byte {next}");
                    Some((loc, next))
                }
                _ => None,
            },
            (None, None) => None,
        };
        let (mut location, mut offset) = match resumed {
            Some(r) => r,
            None => (self.open(repo).await?, 0),
        };
        if count {
            self.total.inc(offset);
        }
        let mut failures = 0u32;
        let mut restarts = 0u32;
        let retries = self.client.retries;
        while offset < blob.size {
            let len = self.chunk.min(blob.size - offset);
            let call = Call::new(Method::PATCH, location.clone(), vec![scope(repo)])
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(
                    header::CONTENT_RANGE,
                    format!("{offset}-{}", offset + len - 1),
                )
                .body(Content::Blob {
                    payload: self.payload.clone(),
                    blob: blob.clone(),
                    offset,
                    len,
                });
            let outcome = self.client.send(&call, false).await;
            match outcome {
                Ok(a) if a.status == StatusCode::ACCEPTED => {
                    location = self.location(&a, &call)?;
                    offset += len;
                    self.uploaded_bytes.fetch_add(len, Ordering::Relaxed);
                    if count {
                        self.total.inc(len);
                    }
                    failures = 0;
                    self.sessions
                        .set(&endpoint, repo, &digest, Some(&location))?;
                    continue;
                }
                Err(e) if e.is_fatal() => return Err(e),
                Ok(a)
                    if !(client::retryable(a.status)
                        || a.status == StatusCode::NOT_FOUND
                        || a.status == StatusCode::RANGE_NOT_SATISFIABLE) =>
                {
                    return Err(a.error(&call));
                }
                Ok(a) => {
                    failures += 1;
                    if failures > retries {
                        return Err(a.error(&call));
                    }
                    tracing::debug!("{}: {}", call.step(), a.status);
                }
                Err(e) => {
                    failures += 1;
                    if failures > retries {
                        return Err(e);
                    }
                    tracing::debug!("{e}");
                }
            }
            tokio::time::sleep(self.client.backoff_for(failures)).await;
            // Ask how far the registry got; start over when it forgot the session.
            match self.status(repo, &location).await? {
                Some((loc, next)) if next <= blob.size && failures < retries => {
                    location = loc;
                    offset = next;
                }
                _ => {
                    restarts += 1;
                    if restarts > retries {
                        return Err(PushError::Protocol {
                            step: call.step(),
                            why: "the registry kept losing the upload session".into(),
                        });
                    }
                    location = self.open(repo).await?;
                    offset = 0;
                }
            }
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let call = Call::new(
            Method::PUT,
            format!("{location}{sep}digest={digest}"),
            vec![scope(repo)],
        )
        .header(header::CONTENT_TYPE, "application/octet-stream");
        let failed = match self.client.send(&call, false).await {
            Ok(a) if a.status == StatusCode::CREATED => match a.header(CONTENT_DIGEST) {
                Some(got) if got != digest => {
                    return Err(PushError::DigestMismatch {
                        expected: digest,
                        got: got.to_owned(),
                    })
                }
                _ => None,
            },
            Ok(a) => Some(a.error(&call)),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => Some(e),
        };
        // The answer may have been lost after the registry committed the blob.
        if let Some(e) = failed {
            if !self.has_blob(repo, &blob.digest).await? {
                return Err(e);
            }
        }
        self.sessions.set(&endpoint, repo, &digest, None)?;
        Ok(())
    }

    /// Pushes one manifest as `reference` unless the registry already has it there with
    /// our digest. True when it was pushed.
    async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        digest: &Sha256Digest,
        media_type: &str,
    ) -> Result<bool, PushError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let head = Call::new(Method::HEAD, url.clone(), vec![scope(repo)])
            .header(header::ACCEPT, media_type);
        let a = self.client.send(&head, true).await?;
        if a.status == StatusCode::OK && a.header(CONTENT_DIGEST) == Some(&digest.to_string()) {
            return Ok(false);
        }
        let bytes = self.manifest_bytes(digest)?;
        let put = Call::new(Method::PUT, url, vec![scope(repo)])
            .header(header::CONTENT_TYPE, media_type)
            .body(Content::Bytes(bytes));
        let a = self.client.send(&put, true).await?;
        if a.status != StatusCode::CREATED {
            return Err(a.error(&put));
        }
        match a.header(CONTENT_DIGEST) {
            Some(got) if got != digest.to_string() => Err(PushError::DigestMismatch {
                expected: digest.to_string(),
                got: got.to_owned(),
            }),
            _ => Ok(true),
        }
    }

    /// How many manifests the index `top` lists that `image` does not hold (0 for a
    /// platform manifest).
    fn missing_children(
        &self,
        top: &airlock_payload::ManifestRef,
        image: &Image,
    ) -> Result<usize, PushError> {
        let is_index = top.media_type == airlock_oci::media::OCI_INDEX
            || top.media_type == airlock_oci::media::DOCKER_LIST;
        if !is_index {
            return Ok(0);
        }
        let bytes = self.manifest_bytes(&top.digest)?;
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<Child>,
        }
        #[derive(serde::Deserialize)]
        struct Child {
            digest: String,
        }
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| PushError::Read {
            digest: top.digest.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        Ok(index
            .manifests
            .iter()
            .filter(|c| {
                !image
                    .manifests
                    .iter()
                    .any(|m| m.digest.to_string() == c.digest)
            })
            .count())
    }

    /// A manifest's bytes from the installer, checked.
    fn manifest_bytes(&self, digest: &Sha256Digest) -> Result<Bytes, PushError> {
        let read_err = |source| PushError::Read {
            digest: digest.to_string(),
            source,
        };
        let blob = self
            .payload
            .index()
            .blob(digest)
            .ok_or_else(|| read_err(std::io::Error::other("not in the installer's index")))?;
        let mut out = Vec::with_capacity(blob.size as usize);
        self.payload
            .blob_reader(blob)
            .read_to_end(&mut out)
            .map_err(read_err)?;
        if Sha256Digest::of(&out) != *digest {
            return Err(read_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the stored bytes do not match the digest",
            )));
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(registry: &str, repository: &str, tag: &str, d: u8) -> Image {
        let digest = Sha256Digest::of(&[d]);
        Image {
            registry: registry.into(),
            repository: repository.into(),
            tag: Some(tag.into()),
            digest,
            manifests: vec![airlock_payload::ManifestRef {
                digest,
                media_type: airlock_oci::media::OCI_MANIFEST.into(),
                platform: None,
            }],
            blobs: vec![],
        }
    }

    #[test]
    fn images_keep_their_host_below_the_prefix() {
        let images = [
            image("docker.io", "library/app", "1", 1),
            image("example.hub", "library/app", "1", 2),
        ];
        let p = plan(&images, "mirror", false).unwrap();
        assert_eq!(p[0].repo, "mirror/docker.io/library/app");
        assert_eq!(p[1].repo, "mirror/example.hub/library/app");
    }

    #[test]
    fn flattened_images_that_meet_on_one_name_are_an_error_naming_both() {
        let images = [
            image("docker.io", "library/app", "1", 1),
            image("example.hub", "library/app", "1", 2),
        ];
        let err = plan(&images, "", true).unwrap_err().to_string();
        assert!(err.contains("docker.io/library/app:1"), "{err}");
        assert!(err.contains("example.hub/library/app:1"), "{err}");
        assert!(
            err.contains("would both be pushed as library/app:1"),
            "{err}"
        );
        // Different tags do not collide.
        let images = [
            image("docker.io", "library/app", "1", 1),
            image("example.hub", "library/app", "2", 2),
        ];
        assert_eq!(plan(&images, "", true).unwrap().len(), 2);
    }
}
