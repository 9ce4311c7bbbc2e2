#!/bin/sh
# Runs after containerd is up and the images are pulled (see `install` in the README for
# every AIRLOCK_* variable). A non-zero exit stops the install and shows this output.
set -eu
echo "node $AIRLOCK_NAME $AIRLOCK_VERSION is ready under $AIRLOCK_ROOT"
echo "registry: http://$AIRLOCK_REGISTRY, containerd: $AIRLOCK_CONTAINERD_SOCKET"
