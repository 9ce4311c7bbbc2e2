//! `airlock images` and `discover:` end to end: the real `airlock` over the fixture folders of
//! `tests/fixtures-data/discover/` (manifests, Helm charts with a folder and a packaged
//! subchart, image lists), its text and JSON output, exit codes, `--strict` and `exclude:`;
//! then `airlock build` with `discover:` pulling the discovered images from a real registry
//! (distribution's `docker-registry`, filled by `skopeo copy`) and the installer's
//! `list --json` holding them.

mod util;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};

use airlock_fixtures::charts;
use airlock_fixtures::images::{write_oci_layout, ImageContent, BUSYBOX_PATH};
use serde_json::Value;
use util::{have_command, prerequisite, run, Workdir};

const PROXY: &str =
    "quay.io/team/proxy@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const WEBHOOK: &str = "registry.local:5000/team/webhook@sha256:abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd";

/// What `discover: [manifests/, charts/]` finds in the fixtures, with one source each.
const EXPECTED: [(&str, &str); 19] = [
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
];

/// A work folder holding a copy of the fixtures, with the packaged subchart made by `tar`.
fn fixture_workdir() -> Workdir {
    let w = Workdir::new();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures-data/discover");
    run({
        let mut c = Command::new("cp");
        c.arg("-r")
            .arg(format!("{}/.", source.display()))
            .arg(w.path());
        c
    })
    .success();
    run({
        let mut c = Command::new("tar");
        c.current_dir(w.path()).args([
            "-C",
            "packed",
            "-czf",
            "charts/web/charts/metrics-1.0.0.tgz",
            "metrics",
        ]);
        c
    })
    .success();
    w
}

const SPEC: &str = "name: found\nversion: '1'\ndiscover: [manifests/, charts/]\n";

fn refs_of(images: &Value) -> Vec<String> {
    images
        .as_array()
        .expect("an array")
        .iter()
        .map(|i| i["ref"].as_str().expect("ref is text").to_owned())
        .collect()
}

#[test]
fn images_prints_every_discovered_reference_with_where_it_came_from() {
    let w = fixture_workdir();
    w.write_spec(SPEC);
    let r = w.airlock(&["images", "-f", "airlock.yaml"]).success();
    for (reference, source) in EXPECTED {
        let line = r
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(reference))
            .unwrap_or_else(|| panic!("{reference} not listed:\n{}", r.describe()));
        assert!(line.contains(source), "{reference}: {line}");
    }
    assert!(
        r.stdout
            .starts_with("analysed statically: charts/edge (no helm found"),
        "{}",
        r.describe()
    );
    let image_lines = r
        .stdout
        .lines()
        .skip(2)
        .take_while(|l| !l.is_empty())
        .count();
    assert_eq!(image_lines, EXPECTED.len(), "{}", r.describe());
    // Duplicates are one line with every source.
    let nginx = r
        .stdout
        .lines()
        .find(|l| l.starts_with("docker.io/library/nginx:latest"))
        .unwrap();
    assert!(
        nginx.ends_with(
            "manifests/more/jobs.yml:18, manifests/workloads.yaml:14, manifests/workloads.yaml:40"
        ),
        "{nginx}"
    );
    // Unresolved template values are listed, not dropped.
    assert!(
        r.stdout.contains("unresolved, not captured"),
        "{}",
        r.describe()
    );
    assert!(r.stdout.contains(
        "charts/web/templates/deployment.yaml:17: `\"example/{{ .Release.Name }}:1\"`: `.Release.Name` is only known at install time"
    ));
    assert!(r.stdout.contains(
        "19 images (0 listed, 19 discovered only; 25 files scanned), 0 excluded, 4 unresolved, 2 warnings"
    ), "{}", r.describe());
    // Unparsable YAML: a warning with file:line; the rest was scanned (late:1 is after it).
    r.stderr_has("warning: manifests/broken.yaml:11: failed to parse YAML");
    r.stderr_has(
        "warning: charts/web/Chart.yaml:13: dependency `missing-dep` is not under charts/",
    );
}

#[test]
fn images_json_has_sources_unresolved_warnings_and_exclusions() {
    let w = fixture_workdir();
    w.write_spec(&format!(
        "{SPEC}images:\n  - ref: nginx\nexclude:\n  - registry.k8s.io/*\n  - alpine:3.19\n"
    ));
    let out = w
        .airlock(&["images", "-f", "airlock.yaml", "--json"])
        .success()
        .json();
    let want: BTreeSet<String> = EXPECTED
        .iter()
        .map(|(r, _)| r.to_string())
        .filter(|r| r != "registry.k8s.io/pause:3.9" && r != "docker.io/library/alpine:3.19")
        .collect();
    let got: BTreeSet<String> = refs_of(&out["images"]).into_iter().collect();
    assert_eq!(got, want);

    let nginx = out["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ref"] == "docker.io/library/nginx:latest")
        .unwrap();
    assert_eq!(nginx["listed"], true);
    assert_eq!(nginx["sources"][0]["file"], "airlock.yaml");
    assert_eq!(nginx["sources"][0]["line"], Value::Null);
    assert_eq!(nginx["sources"][0]["what"], "images[0]");
    let discovered: Vec<(String, u64)> = nginx["sources"].as_array().unwrap()[1..]
        .iter()
        .map(|s| {
            (
                s["file"].as_str().unwrap().to_owned(),
                s["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        discovered,
        [
            ("manifests/more/jobs.yml".to_owned(), 18),
            ("manifests/workloads.yaml".to_owned(), 14),
            ("manifests/workloads.yaml".to_owned(), 40)
        ]
    );
    assert_eq!(
        nginx["sources"][2]["what"],
        "Deployment/web spec.template.spec.containers[0].image"
    );

    let excluded: Vec<(String, String)> = out["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["ref"].as_str().unwrap().to_owned(),
                e["pattern"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        excluded,
        [
            (
                "docker.io/library/alpine:3.19".to_owned(),
                "docker.io/library/alpine:3.19".to_owned()
            ),
            (
                "registry.k8s.io/pause:3.9".to_owned(),
                "registry.k8s.io/*".to_owned()
            ),
        ]
    );

    let unresolved: Vec<(String, u64)> = out["unresolved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["file"].as_str().unwrap().to_owned(),
                u["line"].as_u64().unwrap(),
            )
        })
        .collect();
    let deployment = "charts/web/templates/deployment.yaml".to_owned();
    assert_eq!(
        unresolved,
        [
            (deployment.clone(), 15),
            (deployment.clone(), 17),
            (deployment, 19),
            ("charts/web/values.yaml".to_owned(), 9),
        ]
    );
    assert!(out["unresolved"][0]["reason"]
        .as_str()
        .unwrap()
        .contains(".Values.extra.repository, .Values.extra.tag not set"));
    let warnings: Vec<(String, u64)> = out["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["file"].as_str().unwrap().to_owned(),
                u["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        warnings,
        [
            ("manifests/broken.yaml".to_owned(), 11),
            ("charts/web/Chart.yaml".to_owned(), 13)
        ]
    );
}

#[test]
fn strict_turns_warnings_and_unresolved_references_into_an_error() {
    let w = fixture_workdir();
    w.write_spec(SPEC);
    let r = w
        .airlock(&["images", "-f", "airlock.yaml", "--strict"])
        .expect_code(1);
    assert!(r.stdout.is_empty(), "{}", r.describe());
    r.stderr_has(
        "error: discovery is incomplete (--strict): manifests/broken.yaml:11: failed to parse YAML",
    );
    r.stderr_has("(and 5 more problems)");

    // Unresolved references alone fail too; a clean discovery passes.
    w.write_file("vars/images.txt", "${REGISTRY}/app:1\nnginx\n");
    w.write_spec("name: found\nversion: '1'\ndiscover: [vars/images.txt]\n");
    w.airlock(&["images", "-f", "airlock.yaml", "--strict"])
        .expect_code(1)
        .stderr_has(
            "(--strict): unresolved image reference vars/images.txt:1: `${REGISTRY}/app:1`",
        );
    w.write_spec("name: found\nversion: '1'\ndiscover: [charts/edge/, manifests/more/]\n");
    let r = w
        .airlock(&["images", "-f", "airlock.yaml", "--strict", "--json"])
        .success();
    assert_eq!(refs_of(&r.json()["images"]).len(), 5, "{}", r.describe());
    assert!(r.stderr.is_empty(), "{}", r.describe());

    // The build refuses too, before pulling anything.
    w.write_spec(SPEC);
    let r = w
        .airlock(&["build", "-f", "airlock.yaml", "-o", "x.run", "--strict"])
        .expect_code(1);
    r.stderr_has("discovery is incomplete (--strict)");
    assert!(!w.join("x.run").exists());
}

#[test]
fn bad_discover_and_exclude_entries_are_spec_errors_with_their_location() {
    let w = fixture_workdir();
    for (entry, expected) in [
        (
            "discover: [manifests/, nowhere/]",
            "airlock.yaml:3:24: discover[1]: source not found",
        ),
        (
            "discover: manifests/",
            "airlock.yaml:3:11: discover: invalid type",
        ),
        (
            "exclude: ['Not A Ref']",
            "airlock.yaml:3:11: exclude[0]: invalid image reference `Not A Ref`",
        ),
    ] {
        w.write_spec(&format!("name: found\nversion: '1'\n{entry}\n"));
        let r = w.airlock(&["images", "-f", "airlock.yaml"]).expect_code(1);
        r.stderr_has(expected);
    }
    // A `--json` run with no discover lists exactly `images:`.
    w.write_spec("name: found\nversion: '1'\nimages:\n  - ref: busybox:1.36\n");
    let out = w.airlock(&["images", "--json"]).success().json();
    assert_eq!(refs_of(&out["images"]), ["docker.io/library/busybox:1.36"]);
    assert_eq!(out["files_scanned"], 0);
}

// -------------------------------------------------------------------------------------------
// `airlock build` with `discover:` against a real registry.
// -------------------------------------------------------------------------------------------

/// distribution's registry on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Registry {
    let port = util::free_port();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("storage").display()
    );
    let child = util::oci::start_distribution(dir, port, &config);
    Registry { child, port }
}

/// Also the regression test of a race in the build cache: the four images share their base
/// layer and are pulled in parallel; the second worker to store the layer used to replace the
/// first one's file under its reader ("changed while the build was reading it", about one
/// run in two).
#[test]
fn build_captures_listed_and_discovered_images_once_and_skips_excluded_ones() {
    if !prerequisite(
        have_command("docker-registry")
            && have_command("skopeo")
            && Path::new(BUSYBOX_PATH).exists(),
        "build_captures_listed_and_discovered_images",
        "needs docker-registry, skopeo and busybox-static (apt-get install docker-registry skopeo busybox-static)",
    ) || !helm_shim_runs("build_captures_listed_and_discovered_images")
    {
        return;
    }
    let w = Workdir::new();
    let layout = w.join("layout");
    let built = write_oci_layout(
        &layout,
        &[
            ("app", ImageContent::new("listed and discovered"), false),
            ("nginx", ImageContent::new("a short name"), false),
            ("backup", ImageContent::new("a host with a port"), false),
            ("tool", ImageContent::new("from a chart"), false),
        ],
    )
    .expect("write the OCI layout");
    let registry = start_registry(w.path());
    let port = registry.port;
    for (tag, target) in [
        ("app", "team/app:1.0"),
        ("nginx", "library/nginx:latest"),
        ("backup", "ops/backup:2.0"),
        ("tool", "team/tool:3"),
    ] {
        run({
            let mut c = Command::new("skopeo");
            c.args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://127.0.0.1:{port}/{target}"));
            c
        })
        .success();
    }

    w.write_file(
        "deploy/app.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  template:\n    spec:\n      initContainers:\n        - {name: init, image: busybox:1.36}\n      containers:\n        - {name: app, image: example.hub/team/app:1.0}\n        - {name: web, image: nginx}\n",
    );
    w.write_file("deploy/images.txt", "registry.local:5000/ops/backup:2.0\n");
    w.write_file(
        "deploy/tool/Chart.yaml",
        "apiVersion: v2\nname: tool\nversion: 0.1.0\nappVersion: '3'\n",
    );
    // A chart whose registry comes from a values file of the spec's `charts:`, rendered by
    // helm: exactly the rendered image is captured (its default, docker.io/team/tool:3, not).
    w.write_file(
        "deploy/tool/values.yaml",
        "global:\n  imageRegistry: docker.io\nimage:\n  repository: team/tool\n",
    );
    w.write_file(
        "deploy/tool/templates/pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: tool}\nspec:\n  containers:\n    - name: tool\n      image: \"{{ .Values.global.imageRegistry }}/{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}\"\n",
    );
    w.write_file(
        "values/tool.yaml",
        "global:\n  imageRegistry: example.hub\n",
    );
    w.write_spec(
        "name: found\nversion: '1'\nplatform: linux/amd64\nimages:\n  - ref: example.hub/team/app:1.0\ndiscover: [deploy/]\nexclude: ['docker.io/library/busybox:*']\ncharts:\n  - path: deploy/tool\n    values: [values/tool.yaml]\n",
    );
    let url = format!("http://127.0.0.1:{port}");
    let mirrors: Vec<String> = ["docker.io", "example.hub", "registry.local:5000"]
        .iter()
        .map(|h| format!("{h}={url}"))
        .collect();
    let want: BTreeSet<&str> = [
        "docker.io/library/nginx:latest",
        "example.hub/team/app:1.0",
        "example.hub/team/tool:3",
        "registry.local:5000/ops/backup:2.0",
    ]
    .into();

    // What `images` says the build captures...
    let helm = ("AIRLOCK_HELM", charts::HELM_SHIM);
    let plan = w
        .airlock_env(&["images", "--json", "--strict"], &[helm])
        .success()
        .json();
    assert_eq!(plan["charts"][0]["rendered_by"], "helm");
    let planned: BTreeSet<String> = refs_of(&plan["images"]).into_iter().collect();
    assert_eq!(planned, want.iter().map(|s| s.to_string()).collect());

    // ... is what it captures: busybox (excluded, not in the registry) is not pulled, and the
    // image both listed and discovered is captured once.
    let cache = w.join("cache");
    let no_auth = w.join("no-auth.json");
    let mut args = vec![
        "-q",
        "build",
        "-f",
        "airlock.yaml",
        "-o",
        "found.run",
        "--strict",
    ];
    for m in &mirrors {
        args.extend(["--registry-mirror", m.as_str()]);
    }
    w.airlock_env(
        &args,
        &[
            ("AIRLOCK_CACHE_DIR", cache.to_str().unwrap()),
            ("REGISTRY_AUTH_FILE", no_auth.to_str().unwrap()),
            helm,
        ],
    )
    .success();
    let list = w
        .run_installer(&w.join("found.run"), &["list", "--json"])
        .success()
        .json();
    let images: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["type"] == "image")
        .map(|row| {
            (
                row["reference"].as_str().unwrap().to_owned(),
                row["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let digests = [
        ("docker.io/library/nginx:latest", &built[1]),
        ("example.hub/team/app:1.0", &built[0]),
        ("example.hub/team/tool:3", &built[3]),
        ("registry.local:5000/ops/backup:2.0", &built[2]),
    ];
    let expected: Vec<(String, String)> = digests
        .iter()
        .map(|(r, b)| (r.to_string(), b.top_digest().to_owned()))
        .collect();
    assert_eq!(images, expected);
}

// -------------------------------------------------------------------------------------------
// Rendering with helm (the test shim over Helm v4's engine) against the static fallback.
// -------------------------------------------------------------------------------------------

/// Whether the helm shim runs here (it needs PyPI's helm-python-sdk); outside CI a test
/// without it prints why it skips.
fn helm_shim_runs(test: &str) -> bool {
    let runs = Command::new(charts::HELM_SHIM)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    prerequisite(
        runs,
        test,
        "needs fixtures/helm/helm, which needs `pip install helm-python-sdk==0.2.2`",
    )
}

const PATTERN_SPEC: &str = "name: charts\nversion: '1'\ndiscover: [charts/]\ncharts:\n  - path: charts/merged\n    release: merged\n    namespace: apps\n    values: [values/merged.yaml]\n";

fn pattern_workdir() -> Workdir {
    let w = Workdir::new();
    charts::write_pattern_charts(&w.join("charts")).expect("write the charts");
    w.write_file("values/merged.yaml", charts::MERGED_VALUES);
    w.write_spec(PATTERN_SPEC);
    w
}

#[test]
fn helm_renders_every_pattern_chart_and_reports_how_each_chart_was_read() {
    if !helm_shim_runs("helm_renders_every_pattern_chart") {
        return;
    }
    let w = pattern_workdir();
    let out = w
        .airlock(&["images", "--json", "--helm", charts::HELM_SHIM])
        .success();
    let json = out.json();
    let got: BTreeSet<String> = refs_of(&json["images"]).into_iter().collect();
    let want: BTreeSet<String> = charts::HELM_RENDERED
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want, "{}", out.describe());
    // The disabled subchart is not captured; the missing dependency is a warning naming it.
    out.stderr_has("dependency `absent` is not under charts/");
    let how: Vec<(String, String, String)> = json["charts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_owned(),
                c["release"].as_str().unwrap().to_owned(),
                c["rendered_by"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let row = |p: &str, r: &str, by: &str| (p.to_owned(), r.to_owned(), by.to_owned());
    assert_eq!(
        how,
        [
            row("charts/merged", "merged", "helm"),
            row("charts/argsonly", "argsonly", "helm"),
            row("charts/needsdep", "needsdep", "static"),
            row("charts/parent", "parent", "helm"),
            row("charts/parts", "parts", "helm"),
            row("charts/vprefix", "vprefix", "helm"),
        ]
    );
    assert_eq!(json["charts"][0]["namespace"], "apps");
    assert_eq!(json["charts"][0]["helm_version"], "v4.2.3");
    assert_eq!(json["charts"][2]["helm_version"], Value::Null);

    // The text says at the top which charts helm rendered; --all-values lists the disabled
    // component's image, not captured.
    let text = w
        .airlock(&["images", "--all-values", "--helm", charts::HELM_SHIM])
        .success();
    let first = text.stdout.lines().next().unwrap_or_default();
    assert!(
        first
            .starts_with("rendered by helm v4.2.3: charts/merged (release merged, namespace apps)"),
        "{}",
        text.describe()
    );
    assert!(text.stdout.lines().nth(1).unwrap_or_default().starts_with(
        "analysed statically: charts/needsdep (dependency `absent` is not under charts/"
    ));
    let values_only = text
        .stdout
        .split("not rendered (disabled?), not captured:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no values-only section:\n{}", text.describe()));
    assert!(
        values_only.trim_start().starts_with(
            "docker.io/example/metrics:1.0  charts/parent/charts/metrics/templates/pod.yaml:8"
        ),
        "{}",
        text.describe()
    );
    // AIRLOCK_HELM selects it as well, and --strict fails on the missing dependency.
    w.airlock_env(
        &["images", "--strict"],
        &[("AIRLOCK_HELM", charts::HELM_SHIM)],
    )
    .expect_code(1)
    .stderr_has("(--strict): charts/needsdep/Chart.yaml:6: dependency `absent`");
}

#[test]
fn static_fallback_prints_no_wrong_reference_and_lists_every_miss_with_file_line() {
    let w = pattern_workdir();
    let out = w.airlock(&["images", "--json", "--no-helm"]).success();
    let json = out.json();
    let got: BTreeSet<String> = refs_of(&json["images"]).into_iter().collect();
    let want: BTreeSet<String> = charts::STATIC_FOUND.iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want, "{}", out.describe());
    let rendered: BTreeSet<String> = charts::HELM_RENDERED
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(got.is_subset(&rendered), "a wrong reference: {got:?}");
    let unresolved: BTreeSet<String> = json["unresolved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| format!("{}:{}", u["file"].as_str().unwrap(), u["line"]))
        .collect();
    // The two misses (vprefix, merged) are listed at their template line and value line.
    for spot in [
        "charts/vprefix/templates/pod.yaml:8",
        "charts/vprefix/values.yaml:2",
        "charts/merged/templates/pod.yaml:8",
        "charts/merged/values.yaml:6",
    ] {
        assert!(unresolved.contains(spot), "{spot} not in {unresolved:?}");
    }
    assert!(json["charts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["rendered_by"] == "static"));
    let text = w.airlock(&["images", "--no-helm"]).success();
    assert!(
        text.stdout.starts_with("analysed statically: "),
        "{}",
        text.describe()
    );
    // A helm that is named but does not run is an error, not a silent fallback.
    w.airlock(&["images", "--helm", "/nonexistent/helm"])
        .expect_code(1)
        .stderr_has("failed to run `/nonexistent/helm version` (named by --helm)");
}

#[test]
fn bad_charts_entries_are_spec_errors_with_their_location() {
    let w = pattern_workdir();
    for (entry, expected) in [
        (
            "charts:\n  - path: charts/nowhere\n",
            "airlock.yaml:4:11: charts[0].path: source not found",
        ),
        (
            "charts:\n  - path: charts/parts\n    release: Bad_Name\n",
            "invalid release name `Bad_Name`",
        ),
        (
            "charts:\n  - path: charts/parts\n    set: {'a..b': 1}\n",
            "invalid `set` key `a..b`",
        ),
        (
            "charts:\n  - path: charts/parts\n    vals: []\n",
            "unknown field `vals`",
        ),
    ] {
        w.write_spec(&format!("name: charts\nversion: '1'\n{entry}"));
        w.airlock(&["images", "--no-helm"])
            .expect_code(1)
            .stderr_has(expected);
    }
}
