//! Discovery over the fixture folders of `tests/fixtures-data/discover/`, with the expected
//! sets written out by hand from the fixture files.

use std::path::{Path, PathBuf};

use super::*;

/// Static analysis only, whatever helm the machine has.
fn no_helm() -> Options {
    Options {
        no_helm: true,
        ..Options::default()
    }
}

/// The fixture tree, copied into a temporary folder, with `packed/metrics` packed as the
/// subchart `charts/web/charts/metrics-1.0.0.tgz` (no tarballs are checked in).
pub(crate) fn fixture() -> tempfile::TempDir {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures-data/discover");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&source, dir.path());
    pack_chart(
        &dir.path().join("packed/metrics"),
        "metrics",
        &dir.path().join("charts/web/charts/metrics-1.0.0.tgz"),
    );
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Writes `dir` as a `helm package`-style archive: every file under `top/`.
pub(crate) fn pack_chart(dir: &Path, top: &str, out: &Path) {
    let file = std::fs::File::create(out).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(top, dir).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

const PROXY: &str =
    "quay.io/team/proxy@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const WEBHOOK: &str = "registry.local:5000/team/webhook@sha256:abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd";

/// Every reference in `manifests/` and `charts/`, and one place each was found.
fn expected() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "docker.io/bitnami/redis-exporter:1.58",
            "charts/web/charts/cache/templates/statefulset.yaml:13",
        ),
        (
            "docker.io/bitnami/redis:7.2-debian",
            "charts/web/charts/cache/templates/statefulset.yaml:10",
        ),
        (
            "docker.io/example/sessions-redis:7.2",
            "charts/web/charts/cache/templates/statefulset.yaml:10",
        ),
        (
            "docker.io/example/web:2.1.0",
            "charts/web/templates/deployment.yaml:10",
        ),
        (
            "docker.io/example/worker:5",
            "charts/web/templates/deployment.yaml:13",
        ),
        (
            "docker.io/library/alpine:3.19",
            "manifests/more/jobs.yml:38",
        ),
        (
            "docker.io/library/busybox:1.36",
            "manifests/workloads.yaml:11",
        ),
        (
            "docker.io/library/nginx:latest",
            "manifests/workloads.yaml:14",
        ),
        ("docker.io/library/redis:7.2", "manifests/broken.yaml:6"),
        (
            "docker.io/nicolaka/netshoot:v0.11",
            "manifests/workloads.yaml:43",
        ),
        (
            "docker.io/prom/node-exporter:v0.47.0",
            "charts/web/charts/metrics-1.0.0.tgz!/metrics/templates/daemonset.yaml:10",
        ),
        (
            "ghcr.io/example/postgres:16.2",
            "manifests/operator.yaml:27",
        ),
        ("quay.io/team/late:1", "manifests/broken.yaml:21"),
        (PROXY, "manifests/workloads.yaml:16"),
        (
            "quay.io/widgets/controller:1.0",
            "charts/web/crds/widgets.yaml:5",
        ),
        ("registry.k8s.io/pause:3.9", "manifests/images.txt:2"),
        (
            "registry.local:5000/ops/backup:2.0",
            "manifests/workloads.yaml:30",
        ),
        (
            "registry.local:5000/team/controller:3.1",
            "charts/edge/templates/controller.yaml:10",
        ),
        (WEBHOOK, "charts/edge/values.yaml:10"),
    ]
}

fn run(dir: &Path, paths: &[&str]) -> Discovery {
    let paths: Vec<PathBuf> = paths.iter().map(|p| dir.join(p)).collect();
    discover(&paths, dir).unwrap()
}

fn sources_of(d: &Discovery, reference: &str) -> Vec<String> {
    d.found
        .iter()
        .find(|(r, _)| r.to_string() == reference)
        .map(|(_, s)| s.iter().map(Source::to_string).collect())
        .unwrap_or_else(|| panic!("{reference} not found"))
}

#[test]
fn fixture_folders_give_the_expected_set_with_sources() {
    let dir = fixture();
    let d = run(dir.path(), &["manifests", "charts"]);
    let mut expected = expected();
    expected.sort();
    let mut got: Vec<String> = d.found.iter().map(|(r, _)| r.to_string()).collect();
    got.sort();
    let want: Vec<&str> = expected.iter().map(|(r, _)| *r).collect();
    assert_eq!(got, want);
    for (reference, source) in expected {
        let sources = sources_of(&d, reference);
        assert!(
            sources.contains(&source.to_owned()),
            "{reference}: {sources:?}"
        );
    }
    // Duplicates across files and spellings are one reference with every source.
    assert_eq!(
        sources_of(&d, "docker.io/library/nginx:latest"),
        [
            "manifests/more/jobs.yml:18",
            "manifests/workloads.yaml:14",
            "manifests/workloads.yaml:40"
        ]
    );
    assert_eq!(
        sources_of(&d, "docker.io/library/busybox:1.36"),
        [
            "charts/web/templates/deployment.yaml:21",
            "manifests/images.txt:5",
            "manifests/workloads.yaml:11"
        ]
    );
    assert_eq!(
        sources_of(&d, PROXY),
        ["manifests/images.txt:3", "manifests/workloads.yaml:16"]
    );
    // The document after the broken one is still read; the broken one's image is not made up,
    // and nothing comes from files that are not manifests, charts or lists.
    let all = format!("{:?}", d.found);
    assert!(
        !all.contains("lost") && !all.contains("should-not-appear"),
        "{all}"
    );
}

#[test]
fn unresolved_template_values_are_listed_with_file_line_and_reason() {
    let dir = fixture();
    let d = run(dir.path(), &["charts"]);
    let unresolved: Vec<(String, usize)> = d
        .unresolved
        .iter()
        .map(|u| (u.file.to_string(), u.line))
        .collect();
    let deployment = "charts/web/templates/deployment.yaml".to_owned();
    assert_eq!(
        unresolved,
        [
            (deployment.clone(), 15),
            (deployment.clone(), 17),
            (deployment, 19),
            // The chart's templates left lines unresolved, so its values are not taken as
            // written (a template may rewrite them): listed, never guessed.
            ("charts/web/values.yaml".to_owned(), 9),
        ]
    );
    assert!(d.unresolved[3]
        .reason
        .contains("templates compute image names that discovery cannot evaluate (first at charts/web/templates/deployment.yaml:15)"));
    assert!(d.unresolved[0]
        .reason
        .contains(".Values.extra.repository, .Values.extra.tag not set"));
    assert!(d.unresolved[1]
        .reason
        .contains("`.Release.Name` is only known at install time"));
    assert!(d.unresolved[2]
        .reason
        .contains("named template `web.hookImage`"));
    assert_eq!(d.unresolved[1].text, "\"example/{{ .Release.Name }}:1\"");
}

#[test]
fn unparsable_yaml_and_missing_subcharts_are_warnings_and_the_rest_is_scanned() {
    let dir = fixture();
    let d = run(dir.path(), &["manifests", "charts"]);
    let warnings: Vec<String> = d.warnings.iter().map(Warning::to_string).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("manifests/broken.yaml:11: failed to parse YAML"),
        "{warnings:?}"
    );
    assert!(
        warnings[1]
            .starts_with("charts/web/Chart.yaml:13: dependency `missing-dep` is not under charts/"),
        "{warnings:?}"
    );
}

#[test]
fn subchart_values_take_the_parents_overrides_per_alias() {
    let dir = fixture();
    let d = run(dir.path(), &["charts/web"]);
    let refs: Vec<String> = d.found.iter().map(|(r, _)| r.to_string()).collect();
    // cache: the parent's tag over the subchart's map; sessions: the same subchart under an
    // alias with another repository; the subchart's own `redis:7.2` is never rendered.
    assert!(refs.contains(&"docker.io/bitnami/redis:7.2-debian".to_owned()));
    assert!(refs.contains(&"docker.io/example/sessions-redis:7.2".to_owned()));
    assert!(
        !refs.contains(&"docker.io/bitnami/redis:7.2".to_owned()),
        "{refs:?}"
    );
    // Values the templates read are not also taken from values.yaml with guessed tags.
    assert!(
        !refs.iter().any(|r| r.ends_with("example/web:latest")),
        "{refs:?}"
    );
}

#[test]
fn global_image_registry_replaces_the_registry_of_image_maps() {
    let dir = fixture();
    let d = run(dir.path(), &["charts/edge/"]);
    let refs: Vec<String> = d.found.iter().map(|(r, _)| r.to_string()).collect();
    assert_eq!(refs, ["registry.local:5000/team/controller:3.1", WEBHOOK]);
}

#[test]
fn a_file_named_in_discover_with_another_extension_is_an_image_list() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("IMAGES"), "nginx:1.25\n# comment\n").unwrap();
    std::fs::write(dir.path().join("README"), "not scanned\n").unwrap();
    let d = run(dir.path(), &["IMAGES"]);
    assert_eq!(d.found.len(), 1);
    assert_eq!(d.found[0].0.to_string(), "docker.io/library/nginx:1.25");
    let d = run(dir.path(), &["."]);
    assert_eq!(
        d.found.len(),
        0,
        "files without a known extension in folders are skipped"
    );
}

#[test]
fn an_archive_without_a_chart_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src/stuff")).unwrap();
    std::fs::write(dir.path().join("src/stuff/x.yaml"), "image: nginx\n").unwrap();
    pack_chart(
        &dir.path().join("src/stuff"),
        "stuff",
        &dir.path().join("stuff.tgz"),
    );
    std::fs::write(dir.path().join("junk.tgz"), b"not gzip").unwrap();
    let d = run(dir.path(), &["stuff.tgz", "junk.tgz"]);
    assert!(d.found.is_empty());
    let warnings: Vec<String> = d.warnings.iter().map(Warning::to_string).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("stuff.tgz: not a Helm chart archive"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("junk.tgz: failed to read the chart archive"),
        "{warnings:?}"
    );
}

#[test]
fn symlink_loops_are_scanned_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("m")).unwrap();
    std::fs::write(dir.path().join("m/a.yaml"), "image: nginx\n").unwrap();
    std::os::unix::fs::symlink("..", dir.path().join("m/up")).unwrap();
    let d = run(dir.path(), &["m"]);
    assert_eq!(d.found.len(), 1);
    assert_eq!(d.found[0].1.len(), 1, "{:?}", d.found);
}

#[test]
fn an_unreadable_discover_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = discover(&[dir.path().join("gone")], dir.path()).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
}

// -------------------------------------------------------------------------------------------
// Joining with `images:` and `exclude:`.
// -------------------------------------------------------------------------------------------

fn spec_in(dir: &Path, text: &str) -> Spec {
    Spec::from_str_at(text, &dir.join("airlock.yaml")).unwrap()
}

#[test]
fn plan_joins_listed_and_discovered_images_and_drops_excluded_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("layout")).unwrap();
    std::fs::write(
        dir.path().join("images.txt"),
        "example.hub/team/app:1\nnginx\nbusybox:1.36\nquay.io/a/b:1\nregistry.local:5000/x:1\n",
    )
    .unwrap();
    let spec = spec_in(
        dir.path(),
        "name: t\nversion: '1'\nimages:\n  - ref: example.hub/team/app:1\n    from: oci:layout:1\n  - ref: alpine:3\ndiscover: [images.txt]\nexclude: ['docker.io/library/*', 'quay.io/a/b:1', 'ghcr.io/*']\n",
    );
    let plan = plan_with(&spec, &no_helm()).unwrap();
    let refs: Vec<(String, bool)> = plan
        .images
        .iter()
        .map(|i| (i.reference.to_string(), i.listed))
        .collect();
    assert_eq!(
        refs,
        [
            ("docker.io/library/alpine:3".to_owned(), true),
            ("example.hub/team/app:1".to_owned(), true),
            ("registry.local:5000/x:1".to_owned(), false),
        ]
    );
    // The listed one keeps its `from` and gains the discovered source.
    let app = &plan.images[1];
    assert!(matches!(app.from, Some(ImageSource::OciLayout { .. })));
    let sources: Vec<String> = app.sources.iter().map(Source::to_string).collect();
    assert_eq!(sources, ["airlock.yaml images[0]", "images.txt:1"]);
    // Exclusion applies to discovery only: the listed alpine stays.
    let excluded: Vec<(String, String)> = plan
        .excluded
        .iter()
        .map(|e| (e.reference.to_string(), e.pattern.clone()))
        .collect();
    assert_eq!(
        excluded,
        [
            (
                "docker.io/library/busybox:1.36".to_owned(),
                "docker.io/library/*".to_owned()
            ),
            (
                "docker.io/library/nginx:latest".to_owned(),
                "docker.io/library/*".to_owned()
            ),
            ("quay.io/a/b:1".to_owned(), "quay.io/a/b:1".to_owned()),
        ]
    );
    // An exclude that matches nothing is probably a typo.
    let warnings: Vec<String> = plan.warnings.iter().map(Warning::to_string).collect();
    assert_eq!(
        warnings,
        ["airlock.yaml: exclude `ghcr.io/*` matches no discovered image reference"]
    );
    assert_eq!(plan.image_specs().len(), 3);
}

#[test]
fn one_name_is_captured_once_and_a_digest_pin_wins_among_discovered() {
    let dir = tempfile::tempdir().unwrap();
    let hex_a = "a".repeat(64);
    let hex_b = "b".repeat(64);
    std::fs::write(
        dir.path().join("list.txt"),
        format!("app:1\napp:1@sha256:{hex_a}\nother:2@sha256:{hex_a}\nother:2@sha256:{hex_b}\nlisted:1@sha256:{hex_a}\n"),
    )
    .unwrap();
    let spec = spec_in(
        dir.path(),
        "name: t\nversion: '1'\nimages:\n  - ref: listed:1\ndiscover: [list.txt]\n",
    );
    let plan = plan_with(&spec, &no_helm()).unwrap();
    let refs: Vec<String> = plan
        .images
        .iter()
        .map(|i| i.reference.to_string())
        .collect();
    assert_eq!(
        refs,
        [
            format!("docker.io/library/app:1@sha256:{hex_a}"),
            "docker.io/library/listed:1".to_owned(),
            format!("docker.io/library/other:2@sha256:{hex_a}"),
        ]
    );
    assert_eq!(plan.images[0].sources.len(), 2);
    assert_eq!(plan.warnings.len(), 1);
    assert!(
        plan.warnings[0].message.contains("pins another digest"),
        "{:?}",
        plan.warnings
    );
    // The capture step accepts the result: no two entries serve the same tag.
    let mut names = HashSet::new();
    for image in plan.image_specs() {
        let r = image.reference;
        assert!(names.insert((
            r.registry().to_owned(),
            r.repository().to_owned(),
            r.tag().map(str::to_owned)
        )));
    }
}

#[test]
fn strict_fails_on_the_first_warning_or_unresolved_reference() {
    let dir = fixture();
    let spec = spec_in(
        dir.path(),
        "name: t\nversion: '1'\ndiscover: [manifests/, charts/web/]\n",
    );
    let plan = plan_with(&spec, &no_helm()).unwrap();
    let err = plan.check_strict().unwrap_err().to_string();
    assert!(
        err.starts_with(
            "discovery is incomplete (--strict): manifests/broken.yaml:11: failed to parse YAML"
        ),
        "{err}"
    );
    assert!(err.ends_with("(and 5 more problems)"), "{err}");
    let clean = spec_in(
        dir.path(),
        "name: t\nversion: '1'\ndiscover: [charts/edge]\n",
    );
    plan_ok(&clean);
}

fn plan_ok(spec: &Spec) {
    let plan = plan_with(spec, &no_helm()).unwrap();
    plan.check_strict().unwrap();
    assert_eq!(plan.images.len(), 2);
}

#[test]
fn a_spec_without_discover_plans_exactly_its_images() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_in(
        dir.path(),
        "name: t\nversion: '1'\nimages:\n  - ref: nginx\n",
    );
    let plan = plan_with(&spec, &no_helm()).unwrap();
    assert_eq!(plan.images.len(), 1);
    assert_eq!(plan.files_scanned, 0);
    assert!(plan.warnings.is_empty() && plan.unresolved.is_empty());
}
