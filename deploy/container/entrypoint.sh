#!/bin/sh
# The entrypoint of the chesslens images (Dockerfile, Dockerfile.cpu): its first argument picks
# the program, and the program replaces this shell (exec), so that it is the container's main
# process and receives the SIGTERM of `docker stop` or of a pod's deletion itself:
#
#   coordinator ARGS...  -> chesslens-coordinator ARGS...   (the sweep service)
#   worker ARGS...       -> chesslens-worker ARGS...
#   anything else        -> chesslens ARGS...   (submit, wait, status, games, query, --help, ...)
#
# No argument prints chesslens --help.
set -eu
case "${1:-}" in
coordinator)
    shift
    exec /usr/local/bin/chesslens-coordinator "$@"
    ;;
worker)
    shift
    exec /usr/local/bin/chesslens-worker "$@"
    ;;
"")
    exec /usr/local/bin/chesslens --help
    ;;
*)
    exec /usr/local/bin/chesslens "$@"
    ;;
esac
