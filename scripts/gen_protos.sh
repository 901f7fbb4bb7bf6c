#!/usr/bin/env bash
# Regenerate hsmbridge/v1/ from protos/. `--check` regenerates into a temp dir and fails if the
# committed code differs (CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=.
if [ "${1:-}" = "--check" ]; then out=$(mktemp -d); fi
# google/rpc/status.proto comes from googleapis-common-protos (a runtime dependency).
common=$("$py" -c 'import google.rpc.status_pb2 as m, pathlib; print(pathlib.Path(m.__file__).parents[2])')
"$py" -m grpc_tools.protoc -Iprotos -I"$common" --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" protos/hsmbridge/v1/*.proto
touch "$out/hsmbridge/v1/__init__.py"
if [ "${1:-}" = "--check" ]; then
  if ! diff -r -x __pycache__ "$out/hsmbridge/v1" hsmbridge/v1 >/dev/null; then
    echo "generated gRPC code is stale: run scripts/gen_protos.sh and commit" >&2
    diff -r -x __pycache__ "$out/hsmbridge/v1" hsmbridge/v1 | head -20 >&2
    exit 1
  fi
  echo "generated gRPC code is current"
fi
