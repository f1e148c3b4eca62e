#!/usr/bin/env bash
# The example manifests of packaging/kubernetes/ validated offline against the Kubernetes API
# schemas (PyPI kubernetes-validate, which carries them; --strict rejects unknown fields), no
# cluster needed. Kinds without a schema there (the Operator's PodMonitor, Kustomization) are
# checked by tests/kubernetes.rs, with how every manifest agrees with the daemon and the image.
# A copy of the StatefulSet with a misspelt field must be refused, so the validator is known to
# look. Installs kubernetes-validate with pip when missing.
#
# Last line: "kubernetes: N passed, M failed"; exit status 0 only when nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0
failed=0
t_start=$(date +%s)
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
finish() {
    echo "kubernetes: run time $(($(date +%s) - t_start)) s"
    echo "kubernetes: $passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit
}

# Run as a module of the python3 it is installed into, whatever PATH holds.
kv() { python3 -m kubernetes_validate "$@"; }
if ! python3 -c "import kubernetes_validate" 2>/dev/null; then
    echo "== pip install kubernetes-validate"
    python3 -m pip install --quiet kubernetes-validate || { bad "pip install kubernetes-validate"; finish; }
fi
echo "tools: kubernetes-validate $(kv --version 2>&1 | tail -1)"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

for f in packaging/kubernetes/*.yaml; do
    case $(basename "$f") in podmonitor.yaml | kustomization.yaml) continue ;; esac
    if out=$(kv --strict --no-warn "$f" 2>&1) && ! grep -q ERROR <<< "$out"; then
        ok "$f: $(grep -c passed <<< "$out") resource(s) valid ($(grep -o 'for resource [^ ]*' <<< "$out" | cut -d' ' -f3 | paste -sd' '))"
    else
        bad "$f"
        printf '%s\n' "$out" | sed 's/^/     /'
    fi
done
# Every manifest the kustomization applies is one of the files validated above.
missing=$(for r in $(sed -n 's/^  - //p' packaging/kubernetes/kustomization.yaml); do
    [ -f "packaging/kubernetes/$r" ] || echo "$r"
done)
[ -z "$missing" ] && ok "kustomization.yaml: every resource it names exists" ||
    bad "kustomization.yaml names missing files: $missing"
sed 's/shareProcessNamespace:/shareProcessNamespaces:/' packaging/kubernetes/statefulset.yaml > "$W/broken.yaml"
if kv --strict --no-warn "$W/broken.yaml" > "$W/broken.out" 2>&1; then
    bad "a misspelt field (shareProcessNamespaces) is not refused"
else
    ok "a misspelt field (shareProcessNamespaces) is refused"
fi
finish
