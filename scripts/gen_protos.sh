#!/usr/bin/env bash
# Regenerates the Python code of the promo.v1 API from protos/promo/v1/*.proto into
# libs/src/promo/v1/: messages (*_pb2.py), gRPC stubs (*_pb2_grpc.py) and typed stubs from
# mypy-protobuf (*_pb2.pyi, *_pb2_grpc.pyi). The generated files are never edited by hand.
#
#   scripts/gen_protos.sh          buf lint, then regenerate libs/src/promo/v1/
#   scripts/gen_protos.sh --check  buf lint, then fail if libs/src/promo/v1/ is not what the
#                                  protos generate (used by CI; changes nothing)
#
# Uses only the pinned tools of .venv (grpcio-tools, mypy-protobuf, buf-bin) and no network, so the
# output is the same on every machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }

mode=generate
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (usage: scripts/gen_protos.sh [--check])" ;;
esac
(($# <= 1)) || die "too many arguments (usage: scripts/gen_protos.sh [--check])"

VENV="$ROOT/.venv/bin"
PY="$VENV/python"
BUF="$VENV/buf"
for tool in "$PY" "$BUF" "$VENV/protoc-gen-mypy" "$VENV/protoc-gen-mypy_grpc"; do
  [[ -x $tool ]] || die "$tool not found: run scripts/bootstrap.sh to create the Python environment."
done
"$PY" -c 'import grpc_tools.protoc' 2>/dev/null \
  || die "grpcio-tools is missing from .venv: run scripts/bootstrap.sh."

PROTO_ROOT=protos
PROTO_DIR="$PROTO_ROOT/promo/v1"
OUT_PKG=libs/src/promo/v1

# Fixed, locale-independent file order, so protoc always sees the same command line.
export LC_ALL=C
shopt -s nullglob
protos=("$PROTO_DIR"/*.proto)
((${#protos[@]})) || die "no .proto files in $PROTO_DIR"

say "buf lint $PROTO_ROOT"
"$BUF" lint "$PROTO_ROOT" || die "buf lint found problems in $PROTO_ROOT (see above)."

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

say "generating Python code from ${#protos[@]} files in $PROTO_DIR"
# -I protos makes the generated imports read "from promo.v1 import common_pb2"; the well-known
# types (google/protobuf/*.proto) come from the include folder bundled with grpcio-tools.
"$PY" -m grpc_tools.protoc \
  -I "$PROTO_ROOT" \
  --plugin=protoc-gen-mypy="$VENV/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$VENV/protoc-gen-mypy_grpc" \
  --python_out="$tmp" \
  --grpc_python_out="$tmp" \
  --mypy_out=quiet:"$tmp" \
  --mypy_grpc_out=quiet:"$tmp" \
  "${protos[@]}" || die "protoc failed (see above)."

generated="$tmp/promo/v1"
[[ -d $generated ]] || die "protoc produced nothing under promo/v1"
# The package markers are kept by hand (empty), not generated.
: >"$generated/__init__.py"

if [[ $mode == check ]]; then
  if diff -r -q -x __pycache__ "$generated" "$OUT_PKG" >"$tmp/diff.txt"; then
    say "generated protobuf code in $OUT_PKG is up to date"
    exit 0
  fi
  sed "s|$tmp/promo/v1|<fresh>|g" "$tmp/diff.txt" >&2
  die "generated protobuf code is stale: run make protos"
fi

# Replace the generated files only after protoc succeeded: old files (including those of deleted
# protos) go away, the empty __init__.py files stay.
mkdir -p "$OUT_PKG"
[[ -f libs/src/promo/__init__.py ]] || : >libs/src/promo/__init__.py
find "$OUT_PKG" -mindepth 1 -maxdepth 1 ! -name __init__.py -exec rm -rf {} +
find "$generated" -mindepth 1 -maxdepth 1 ! -name __init__.py -exec cp {} "$OUT_PKG"/ \;
[[ -f $OUT_PKG/__init__.py ]] || : >"$OUT_PKG/__init__.py"
say "wrote $(find "$OUT_PKG" -maxdepth 1 -type f ! -name __init__.py | wc -l | tr -d ' ') files to $OUT_PKG"
