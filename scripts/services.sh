#!/usr/bin/env bash
# Private PostgreSQL and Redis for this checkout (dev, tests, CI).
#
#   scripts/services.sh up     start (or reuse) them; write target/services/env; print it
#   scripts/services.sh down   stop them
#   scripts/services.sh env    print target/services/env (after `up`)
#
# target/services/env holds two lines, ready for `source` or `eval`:
#   export DATABASE_URL=postgres://postgres@127.0.0.1:54329/restock
#   export REDIS_URL=redis://127.0.0.1:63799/0
#
# Environment:
#   RESTOCK_PG_PORT      Postgres port (default 54329)
#   RESTOCK_REDIS_PORT   Redis port (default 63799)
#   DATABASE_URL / REDIS_URL
#                        if set (to anything other than the URL of our own private
#                        instance), that service is the user's own: `up` neither installs
#                        nor starts it and just records the URL in the env file.
#
# Layout (all relative to the repo root, found from this script's location):
#   target/services/pg       Postgres data directory (cluster "restock"; superuser
#                            "postgres", trust auth, listens on 127.0.0.1 only, unix
#                            socket inside the data dir, log in <data>/postgres.log)
#   target/services/redis    Redis dir: redis.pid, redis.log, port
#   target/services/env      the env file
#   target/services/lock     serialises concurrent up/down runs
#
# Postgres refuses to run as root. As root (CI, these machines) the cluster is owned and run
# by the unprivileged system user `restock` (created if missing; `nobody` if that fails).
# That user must be able to traverse the path to the repo; when it cannot, the data dir
# lives at /tmp/restock-services-<12 hex of sha256(repo root)>/pg instead and
# target/services/pg is a symlink to it (such a /tmp dir is also picked up again after
# target/ was wiped). Redis runs as the invoking user.
#
# Everything here is throwaway test data: fsync is off.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
STATE="$ROOT/target/services"
ENV_FILE="$STATE/env"
PG_LINK="$STATE/pg"
REDIS_DIR="$STATE/redis"
PG_PORT="${RESTOCK_PG_PORT:-54329}"
REDIS_PORT="${RESTOCK_REDIS_PORT:-63799}"
PG_DB=restock
OWN_DATABASE_URL="postgres://postgres@127.0.0.1:${PG_PORT}/${PG_DB}"
OWN_REDIS_URL="redis://127.0.0.1:${REDIS_PORT}/0"
READY_TIMEOUT=30
export PGCONNECT_TIMEOUT=5  # libpq clients: never hang on a silent listener

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

check_port_number() {
  case "$2" in
    '' | *[!0-9]*) die "$1 must be a port number, got '$2'" ;;
  esac
  if [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then die "$1 must be a port number, got '$2'"; fi
}

# Anything accepting TCP connections on 127.0.0.1:$1?
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Bound a client that talks to a listener we do not control yet.
with_timeout() {
  if command -v timeout >/dev/null; then timeout 10 "$@"; else "$@"; fi
}

# Pids of live processes named $1 whose command line contains the argument sequence "$2" "$3".
pids_with_args() {
  local p comm i
  local -a args
  for p in /proc/[0-9]*; do
    comm="$(cat "$p/comm" 2>/dev/null)" || continue
    [ "$comm" = "$1" ] || continue
    mapfile -d '' -t args <"$p/cmdline" 2>/dev/null || continue
    for ((i = 0; i + 1 < ${#args[@]}; i++)); do
      if [ "${args[i]}" = "$2" ] && [ "${args[i + 1]}" = "$3" ]; then
        echo "${p#/proc/}"
        break
      fi
    done
  done
}

wait_gone() { # wait_gone <pid>...: bounded wait for processes to exit
  local deadline=$((SECONDS + READY_TIMEOUT)) p
  for p in "$@"; do
    while kill -0 "$p" 2>/dev/null; do
      if [ "$SECONDS" -ge "$deadline" ]; then die "process $p did not exit"; fi
      sleep 0.2
    done
  done
}

# ---------------------------------------------------------------------------------------
# Package installation (root only)

APT_UPDATED=0
apt_install() {
  if ! is_root; then
    die "missing $*; install the Debian/Ubuntu packages: sudo apt-get install -y $*"
  fi
  command -v apt-get >/dev/null || die "missing $* and no apt-get here; install them by hand"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    apt-get update -qq >&2
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  apt-get install -y -qq --no-install-recommends "$@" >&2
}

# ---------------------------------------------------------------------------------------
# Postgres

PG_BIN=""   # dir holding initdb, pg_ctl, postgres (and normally psql, pg_isready, createdb)
PGDATA=""   # resolved data dir
PG_USER=""  # OS user owning/running the cluster ("" = the invoking user)

pg_bin_ok() { [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]; }

find_pg_bin() {
  local want="${1:-}" d
  # A data dir made by major version N needs version N's binaries.
  if [ -n "$want" ] && pg_bin_ok "/usr/lib/postgresql/$want/bin"; then
    echo "/usr/lib/postgresql/$want/bin"
    return 0
  fi
  if d="$(command -v initdb 2>/dev/null)"; then
    # Follow symlinks (e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb) to
    # the real bin dir, which also holds the matching psql and pg_isready.
    d="$(dirname "$(readlink -f "$d")")"
    if pg_bin_ok "$d"; then echo "$d"; return 0; fi
  fi
  d="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
  if [ -n "$d" ] && pg_bin_ok "$d"; then echo "$d"; return 0; fi
  return 1
}

# Client tool: from PG_BIN if there, else PATH.
pgtool() {
  if [ -x "$PG_BIN/$1" ]; then echo "$PG_BIN/$1"; else command -v "$1" || die "$1 not found"; fi
}

# Run a command as the cluster owner, from / (the cwd may not be readable by that user).
as_pg() {
  if [ -z "$PG_USER" ]; then
    (cd / && "$@")
  elif command -v runuser >/dev/null; then
    (cd / && runuser -u "$PG_USER" -- "$@")
  else
    (cd / && su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")")
  fi
}

ensure_pg_user() {
  if ! is_root; then PG_USER=""; return; fi
  if id -u restock >/dev/null 2>&1; then PG_USER=restock; return; fi
  if useradd --system --no-create-home --shell /usr/sbin/nologin restock >/dev/null 2>&1 \
    || id -u restock >/dev/null 2>&1; then
    PG_USER=restock
  else
    log "could not create system user 'restock'; running Postgres as 'nobody'"
    PG_USER=nobody
  fi
}

pg_user_can() { # pg_user_can <test-flag> <path>
  if [ -z "$PG_USER" ]; then test "$1" "$2"; else as_pg test "$1" "$2"; fi
}

# Sets PGDATA, creating the directory (and the symlink, if any) when needed.
resolve_pgdata() {
  local hash tmpbase
  hash="$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
  tmpbase="/tmp/restock-services-$hash"
  if [ -L "$PG_LINK" ]; then
    PGDATA="$(readlink "$PG_LINK")"
  elif [ -d "$PG_LINK" ]; then
    PGDATA="$PG_LINK"
  elif [ -f "$tmpbase/pg/PG_VERSION" ] || { [ -n "$PG_USER" ] && ! pg_user_can -x "$STATE"; }; then
    if [ -e "$tmpbase" ] && { [ -L "$tmpbase" ] || [ ! -O "$tmpbase" ]; }; then
      die "$tmpbase exists but is not a directory owned by $(id -un); remove it"
    fi
    mkdir -p "$tmpbase/pg"
    chmod 755 "$tmpbase"
    ln -sfn "$tmpbase/pg" "$PG_LINK"
    PGDATA="$tmpbase/pg"
  else
    mkdir -p "$PG_LINK"
    PGDATA="$PG_LINK"
  fi
  mkdir -p "$PGDATA"
  if [ -n "$PG_USER" ]; then
    chown "$PG_USER:$(id -gn "$PG_USER")" "$PGDATA"
    pg_user_can -w "$PGDATA" || die "user $PG_USER cannot write $PGDATA (check the parent dirs' permissions)"
  fi
  chmod 700 "$PGDATA"
}

pg_running() { # our postmaster alive (per its pid file)?
  [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

pg_ready() {
  "$(pgtool pg_isready)" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -t 2 >/dev/null 2>&1
}

pg_pid_port() { sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null || true; }

pg_log_tail() {
  if [ -f "$PGDATA/postgres.log" ]; then
    printf -- '--- tail of %s ---\n' "$PGDATA/postgres.log" >&2
    tail -n 40 "$PGDATA/postgres.log" >&2 || true
  fi
}

pg_stop() {
  if pg_running; then
    log "stopping Postgres ($PGDATA)"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t "$READY_TIMEOUT" stop >/dev/null
  fi
}

pg_write_conf() {
  local sockdir="$PGDATA"
  # Unix socket paths are limited to 107 bytes; without one we still have TCP.
  if [ "$(printf '%s/.s.PGSQL.%s.lock' "$PGDATA" "$PG_PORT" | wc -c)" -gt 100 ]; then sockdir=""; fi
  as_pg tee "$PGDATA/restock.conf" >/dev/null <<EOF
# Written by scripts/services.sh on every start; edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$sockdir'
max_connections = 300
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  if ! grep -q "^include_if_exists = 'restock.conf'" "$PGDATA/postgresql.conf"; then
    printf "\ninclude_if_exists = 'restock.conf'\n" | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
  fi
}

# A postmaster still running for our data dir path after its pid file went away (target/
# wiped or moved while it ran): stop it, or it keeps the port. Matched by its command line,
# which pg_ctl sets to `postgres -D <data dir>` and the postmaster never rewrites.
pg_stop_orphans() {
  local pids
  [ -f "$PGDATA/postmaster.pid" ] && return 0
  pids="$(pids_with_args postgres -D "$PGDATA")"
  [ -n "$pids" ] || return 0
  log "stopping orphaned Postgres for $PGDATA (pid ${pids//$'\n'/ })"
  # shellcheck disable=SC2086
  kill -INT $pids 2>/dev/null || true
  # shellcheck disable=SC2086
  wait_gone $pids
}

pg_foreign_hint() {
  local dd
  dd="$(with_timeout "$(pgtool psql)" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -XAtqc 'show data_directory' 2>/dev/null || true)"
  if [ -n "$dd" ]; then echo " (a Postgres with data directory $dd)"; fi
}

pg_up() {
  local want="" ver out
  ensure_pg_user
  mkdir -p "$STATE"
  resolve_pgdata
  if [ -f "$PGDATA/PG_VERSION" ]; then want="$(cat "$PGDATA/PG_VERSION")"; fi
  if ! PG_BIN="$(find_pg_bin "$want")"; then
    apt_install postgresql
    PG_BIN="$(find_pg_bin "$want")" || die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found after install"
  fi
  if [ -n "$want" ]; then
    ver="$("$PG_BIN/postgres" --version | sed -nE 's/^postgres \(PostgreSQL\) ([0-9]+).*/\1/p')"
    [ "$ver" = "$want" ] || die "$PGDATA was made by PostgreSQL $want but only $ver binaries ($PG_BIN) were found; install postgresql-$want, or remove $PGDATA to start afresh"
  fi

  # Already running on the wanted port: reuse.
  if pg_running && [ "$(pg_pid_port)" = "$PG_PORT" ]; then
    pg_wait_ready
    log "Postgres already running on 127.0.0.1:$PG_PORT ($PGDATA)"
    pg_ensure_db
    return 0
  fi

  pg_stop_orphans
  if port_in_use "$PG_PORT"; then
    die "port $PG_PORT is taken by something that is not this checkout's Postgres$(pg_foreign_hint); stop it or choose another port with RESTOCK_PG_PORT"
  fi
  if pg_running; then
    log "Postgres running on port $(pg_pid_port); restarting it on $PG_PORT"
    pg_stop
  fi

  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    log "initdb $PGDATA (PostgreSQL from $PG_BIN)"
    if ! as_pg "$PG_BIN/initdb" -D "$PGDATA" --auth=trust -U postgres --encoding=UTF8 --locale=C \
      >"$STATE/initdb.log" 2>&1; then
      tail -n 40 "$STATE/initdb.log" >&2
      die "initdb failed (full log: $STATE/initdb.log)"
    fi
  fi
  pg_write_conf

  log "starting Postgres on 127.0.0.1:$PG_PORT"
  # pg_ctl -w polls the postmaster's status and gives up after -t seconds.
  # 9>&-: the daemon must not inherit the lock's fd (it would hold the lock forever).
  if ! out="$(as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/postgres.log" -w -t "$READY_TIMEOUT" start 2>&1 9>&-)"; then
    printf '%s\n' "$out" >&2
    pg_log_tail
    die "Postgres did not start (log: $PGDATA/postgres.log)"
  fi
  pg_wait_ready
  pg_ensure_db
}

pg_wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  until pg_ready; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      pg_log_tail
      die "Postgres not answering on 127.0.0.1:$PG_PORT after ${READY_TIMEOUT}s"
    fi
    sleep 0.2
  done
}

pg_ensure_db() {
  local psql exists
  psql="$(pgtool psql)"
  exists="$("$psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -XAtqc \
    "select 1 from pg_database where datname = '$PG_DB'")"
  if [ "$exists" != 1 ]; then
    log "creating database $PG_DB"
    "$psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Xqc "create database $PG_DB" >/dev/null
  fi
}

pg_down() {
  [ -e "$PG_LINK" ] || return 0
  ensure_pg_user_existing
  if [ -L "$PG_LINK" ]; then PGDATA="$(readlink "$PG_LINK")"; else PGDATA="$PG_LINK"; fi
  [ -f "$PGDATA/postmaster.pid" ] || return 0
  local want=""
  if [ -f "$PGDATA/PG_VERSION" ]; then want="$(cat "$PGDATA/PG_VERSION")"; fi
  PG_BIN="$(find_pg_bin "$want")" || die "PostgreSQL binaries not found; cannot stop $PGDATA"
  pg_stop
}

# For `down`: run as whoever owns the data dir; never create users.
ensure_pg_user_existing() {
  PG_USER=""
  if is_root; then
    local owner
    owner="$(stat -L -c %U "$PG_LINK" 2>/dev/null || echo root)"
    if [ "$owner" != root ]; then PG_USER="$owner"; fi
  fi
}

# ---------------------------------------------------------------------------------------
# Redis

REDIS_CLI=""

redis_cli() { with_timeout "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

redis_pid() { cat "$REDIS_DIR/redis.pid" 2>/dev/null || true; }

redis_alive() { # our redis-server process alive (per its pid file)?
  local pid
  pid="$(redis_pid)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q redis "/proc/$pid/comm" 2>/dev/null
}

# The pidfile setting tells our instance from others (unlike `dir`, it is still reported
# after the directory was deleted).
redis_is_ours() { [ "$(redis_cli config get pidfile 2>/dev/null | sed -n 2p)" = "$REDIS_DIR/redis.pid" ]; }

redis_ours_ready() { # answering on REDIS_PORT, and it is ours?
  [ "$(redis_cli ping 2>/dev/null)" = PONG ] && redis_is_ours
}

redis_log_tail() {
  if [ -f "$REDIS_DIR/redis.log" ]; then
    printf -- '--- tail of %s ---\n' "$REDIS_DIR/redis.log" >&2
    tail -n 40 "$REDIS_DIR/redis.log" >&2 || true
  fi
}

redis_stop() {
  local pid deadline port
  redis_alive || return 0
  pid="$(redis_pid)"
  log "stopping Redis (pid $pid)"
  port="$(cat "$REDIS_DIR/port" 2>/dev/null || true)"
  if [ -n "$port" ] && [ -n "$REDIS_CLI" ]; then
    with_timeout "$REDIS_CLI" -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
  fi
  deadline=$((SECONDS + READY_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then die "Redis (pid $pid) did not stop"; fi
    kill -TERM "$pid" 2>/dev/null || true
    sleep 0.2
  done
  rm -f "$REDIS_DIR/redis.pid"
}

# A redis-server of ours on our port whose pid file is gone (target/ wiped while it ran):
# shut it down.
redis_stop_orphan() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  redis_is_ours || return 0
  log "stopping orphaned Redis on port $REDIS_PORT"
  redis_cli shutdown nosave >/dev/null 2>&1 || true
  while port_in_use "$REDIS_PORT"; do
    if [ "$SECONDS" -ge "$deadline" ]; then die "Redis on port $REDIS_PORT did not stop"; fi
    sleep 0.2
  done
}

redis_up() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt_install redis-server
  fi
  command -v redis-server >/dev/null || die "redis-server not found after install"
  REDIS_CLI="$(command -v redis-cli)" || die "redis-cli not found after install"
  mkdir -p "$REDIS_DIR"

  # Already running on the wanted port: reuse.
  if redis_alive && [ "$(cat "$REDIS_DIR/port" 2>/dev/null)" = "$REDIS_PORT" ]; then
    redis_wait_ready
    log "Redis already running on 127.0.0.1:$REDIS_PORT ($REDIS_DIR)"
    return 0
  fi

  redis_stop_orphan
  if port_in_use "$REDIS_PORT"; then
    die "port $REDIS_PORT is taken by something that is not this checkout's Redis; stop it or choose another port with RESTOCK_REDIS_PORT"
  fi
  if redis_alive; then
    log "Redis running on port $(cat "$REDIS_DIR/port" 2>/dev/null || echo '?'); restarting it on $REDIS_PORT"
    redis_stop
  fi

  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  rm -f "$REDIS_DIR/redis.pid"
  echo "$REDIS_PORT" >"$REDIS_DIR/port"
  if ! (cd "$REDIS_DIR" && redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes \
    --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" \
    --save '' --appendonly no >/dev/null 2>&1 9>&-); then
    redis_log_tail
    die "redis-server failed to start (log: $REDIS_DIR/redis.log)"
  fi
  redis_wait_ready
}

redis_wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  until redis_ours_ready; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      redis_log_tail
      die "Redis not answering on 127.0.0.1:$REDIS_PORT after ${READY_TIMEOUT}s"
    fi
    sleep 0.2
  done
}

redis_down() {
  [ -f "$REDIS_DIR/redis.pid" ] || return 0
  REDIS_CLI="$(command -v redis-cli || true)"
  redis_stop
}

# ---------------------------------------------------------------------------------------
# Env file

# Quote for sh only when needed, so plain URLs stay plain (also dotenv-readable).
shell_value() {
  if [[ "$1" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

write_env() {
  local tmp="$ENV_FILE.tmp.$$"
  {
    printf 'export DATABASE_URL=%s\n' "$(shell_value "$1")"
    printf 'export REDIS_URL=%s\n' "$(shell_value "$2")"
  } >"$tmp"
  mv -f "$tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------------------------------

lock() {
  mkdir -p "$STATE"
  # Held until this script exits; daemons are started with fd 9 closed.
  if command -v flock >/dev/null; then
    exec 9>"$STATE/lock"
    flock 9
  fi
}

# Install (root) or name (otherwise) every missing server package at once.
ensure_packages() {
  local -a missing=()
  if [ "$1" = pg ] && ! find_pg_bin >/dev/null; then missing+=(postgresql); fi
  if [ "$2" = redis ] && { ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; }; then
    missing+=(redis-server)
  fi
  if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
}

cmd_up() {
  local db_url="${DATABASE_URL:-}" redis_url="${REDIS_URL:-}"
  # The URLs of our own instances (e.g. from a sourced env file) are not "the user's own".
  if [ "$db_url" = "$OWN_DATABASE_URL" ]; then db_url=""; fi
  if [ "$redis_url" = "$OWN_REDIS_URL" ]; then redis_url=""; fi
  lock
  ensure_packages "$([ -z "$db_url" ] && echo pg)" "$([ -z "$redis_url" ] && echo redis)"
  if [ -n "$db_url" ]; then
    log "using DATABASE_URL from the environment"
  else
    pg_up
    db_url="$OWN_DATABASE_URL"
  fi
  if [ -n "$redis_url" ]; then
    log "using REDIS_URL from the environment"
  else
    redis_up
    redis_url="$OWN_REDIS_URL"
  fi
  write_env "$db_url" "$redis_url"
  cat "$ENV_FILE"
}

cmd_down() {
  lock
  pg_down
  redis_down
  rm -f "$ENV_FILE"
}

cmd_env() {
  [ -f "$ENV_FILE" ] || die "$ENV_FILE missing; run scripts/services.sh up first"
  cat "$ENV_FILE"
}

check_port_number RESTOCK_PG_PORT "$PG_PORT"
check_port_number RESTOCK_REDIS_PORT "$REDIS_PORT"
[ "$PG_PORT" != "$REDIS_PORT" ] || die "RESTOCK_PG_PORT and RESTOCK_REDIS_PORT must differ"

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  *)
    echo "usage: $0 up|down|env" >&2
    exit 2
    ;;
esac
