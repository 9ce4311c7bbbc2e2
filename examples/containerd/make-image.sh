#!/bin/sh
# Writes image/, an OCI image layout holding two small images of Debian's static busybox
# (apt-get install busybox-static): `1.0` prints a greeting; `pause-3.6` sleeps until
# killed, standing in for the pod sandbox ("pause") image containerd's CRI runs for every
# pod (registry.k8s.io/pause:3.6, containerd 1.6's default). Only coreutils, tar and
# gzip are used, so the example needs no network and no container tool. Deterministic: the
# same busybox gives the same digests.
set -eu
cd "$(dirname "$0")"
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "make-image.sh: $busybox not found (apt-get install busybox-static)" >&2; exit 1; }
rm -rf image .image-work
mkdir -p image/blobs/sha256 .image-work/rootfs/bin
cp "$busybox" .image-work/rootfs/bin/busybox
ln -s busybox .image-work/rootfs/bin/sh
printf 'hello from the airlock containerd example\n' > .image-work/rootfs/greeting
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C .image-work/rootfs -cf .image-work/layer.tar .
diff_id=$(sha256sum .image-work/layer.tar | cut -d' ' -f1)
gzip -n -9 -c .image-work/layer.tar > .image-work/layer.tar.gz
put() { # put FILE: stores FILE as a blob, prints "digest size"
    d=$(sha256sum "$1" | cut -d' ' -f1)
    cp "$1" "image/blobs/sha256/$d"
    echo "$d $(wc -c < "$1")"
}
set -- $(put .image-work/layer.tar.gz); layer=$1; layer_size=$2
image() { # image CMD_JSON: stores a config and manifest over the layer, sets $manifest*
    printf '{"architecture":"amd64","os":"linux","config":{"Cmd":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$1" "$diff_id" > .image-work/config.json
    set -- $(put .image-work/config.json); config=$1; config_size=$2
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
        "$config" "$config_size" "$layer" "$layer_size" > .image-work/manifest.json
    set -- $(put .image-work/manifest.json); manifest=$1; manifest_size=$2
}
entry() { # entry TAG: the index entry of the last image
    printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}' \
        "$manifest" "$manifest_size" "$1"
}
image '["/bin/sh","-c","cat /greeting"]'; hello=$(entry 1.0); hello_manifest=$manifest
image '["/bin/busybox","sleep","2147483647"]'; pause=$(entry pause-3.6)
printf '{"imageLayoutVersion":"1.0.0"}' > image/oci-layout
printf '{"schemaVersion":2,"manifests":[%s,%s]}' "$hello" "$pause" > image/index.json
rm -rf .image-work
echo "wrote $(pwd)/image (1.0: manifest sha256:$hello_manifest; pause-3.6: sha256:$manifest)"
