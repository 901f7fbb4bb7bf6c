#!/bin/sh
# Entry point of deploy/Dockerfile.dev: create the SoftHSM2 token, its PIN and the master KEK
# under hsm.softhsm_dir on first start (idempotent: `init` finds them on later starts), migrate
# the store, then run `hsmbridge "$@"` (default: serve) as PID 1 so it receives SIGTERM.
set -eu
hsmbridge init --softhsm
exec hsmbridge "$@"
