#!/bin/sh
# OpenBao with a size-bounded file audit log: runs the server command it is given and,
# every AUDIT_CHECK_SECONDS, when AUDIT_LOG has reached AUDIT_MAX_BYTES, renames it and
# sends the server SIGHUP, on which OpenBao reopens the audit file (a new one at the same
# path). Entries written between the rename and the reopen go to the renamed file through
# the handle still open: none is lost (tests/integration/vault/test_audit_rotation.py counts
# them). Keeps the newest AUDIT_KEEP renamed files (AUDIT_LOG.<UTC time>), deletes older.
#
# Not copytruncate: entries written between the copy and the truncate would be lost. Not
# the socket or syslog audit device: OpenBao blocks requests while its only audit device
# cannot write, so a stalled log reader would stop every call (docs/deployment.md).
#
# docker-compose.yml runs it in the vault container, under the image's dumb-init:
#   audit-rotate.sh docker-entrypoint.sh server
# The SIGHUP goes to the entrypoint's dumb-init, which forwards it to OpenBao; SIGTERM
# (docker stop) reaches both, and this script waits for the server to finish.
# POSIX sh: runs in the image's busybox and under dash.
set -u

log=${AUDIT_LOG:-/openbao/logs/audit.log}
max=${AUDIT_MAX_BYTES:-104857600}
keep=${AUDIT_KEEP:-10}
every=${AUDIT_CHECK_SECONDS:-60}

if [ "$#" -eq 0 ]; then
    echo "usage: audit-rotate.sh SERVER-COMMAND [ARG...]" >&2
    exit 64
fi

"$@" &
server=$!
sleeper=

# A stop only raises a flag (and cuts the sleep short): a SIGTERM that lands inside rotate()
# lets it finish its rename, SIGHUP and prune. Stopping from the trap itself once left
# AUDIT_KEEP + 1 files when the signal fell between the rename and the prune (a failure of
# test_old_logs_are_pruned_to_audit_keep, one whole run in four).
stopping=
request_stop() {
    stopping=1
    [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
}
trap request_stop TERM INT

prune() {
    # Oldest first, by last write (a name can repeat a second's stamp). Keep the newest.
    set -- $(ls -1tr "$log".* 2>/dev/null)
    while [ "$#" -gt "$keep" ]; do
        rm -f -- "$1"
        shift
    done
}

rotate() {
    size=$(stat -c %s "$log" 2>/dev/null) || return 0
    [ "$size" -ge "$max" ] || return 0
    base="$log.$(date -u +%Y%m%dT%H%M%SZ)"
    target=$base
    n=1
    while [ -e "$target" ]; do  # a second rotation within the same second
        target="$base.$(printf %03d "$n")"
        n=$((n + 1))
    done
    mv -- "$log" "$target" || return 0
    kill -HUP "$server"
    echo "audit-rotate: $log -> $target ($size bytes)" >&2
    prune
}

while [ -z "$stopping" ] && kill -0 "$server" 2>/dev/null; do
    rotate
    [ -n "$stopping" ] && break
    sleep "$every" &
    sleeper=$!
    # A stop that came before $! was known could not cut this sleep short: do it here.
    [ -n "$stopping" ] && kill "$sleeper" 2>/dev/null
    wait "$sleeper"
    sleeper=
done
if [ -n "$stopping" ]; then
    trap - TERM INT
    kill -TERM "$server" 2>/dev/null
fi
wait "$server"
