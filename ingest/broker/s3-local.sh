#!/usr/bin/env bash
# A throw-away single-process S3 server (SeaweedFS `weed mini`) on 127.0.0.1, built from the Go
# module proxy, for the lake tests and benches.
#
#   s3-local.sh build      build the weed binary once (cached outside the work tree); prints its path
#   s3-local.sh cached     exit 0 when the binary is already built (nothing to build)
#   s3-local.sh start      build if needed, start, wait until the bucket takes a signed PUT
#   s3-local.sh stop       SIGTERM, wait, SIGKILL after 30 s (the data stays: start finds it again)
#   s3-local.sh kill       SIGKILL (crash tests)
#   s3-local.sh status     exit 0 when the server answers
#   s3-local.sh env        print the AWS_* variables a client needs (eval-able)
#   s3-local.sh wipe       stop and delete the data directory
#   s3-local.sh remove     stop and delete the whole run dir (data, logs)
#
# Environment (all optional):
#   S3_PORT          S3 endpoint port; the server also takes S3_PORT+1..+4 (master, filer,
#                    volume, admin) and each of those +10000 (gRPC), so two instances need
#                    S3_PORT values at least 5 apart                 (default 18333)
#   S3_HOME          run dir: data, logs, pid                        (default /var/tmp/spendlake-s3-$S3_PORT)
#   S3_ACCESS_KEY    access key of the server's admin identity       (default spendlake-test)
#   S3_SECRET_KEY    its secret key                                  (default spendlake-test-secret)
#   S3_BUCKET        bucket created at start (if missing)            (default lake)
#   SEAWEEDFS_CACHE  where the built binary is kept                  (default ~/.cache/spendlake/seaweedfs)
#
# Why a build: `go install` refuses this module (its go.mod has replace directives), so `build`
# downloads the module with the Go toolchain, copies it somewhere writable and builds it there
# (about 8 minutes on 2 cores the first time; a ~230 MB binary).
set -euo pipefail
MODULE=github.com/seaweedfs/seaweedfs
VERSION=v0.0.0-20261109003541-7506e5f91cd6
PORT="${S3_PORT:-18333}"
RUN="${S3_HOME:-/var/tmp/spendlake-s3-$PORT}"
CACHE="${SEAWEEDFS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spendlake/seaweedfs}"
BIN="$CACHE/weed-$VERSION"
ACCESS_KEY="${S3_ACCESS_KEY:-spendlake-test}"
SECRET_KEY="${S3_SECRET_KEY:-spendlake-test-secret}"
BUCKET="${S3_BUCKET:-lake}"
DATA="$RUN/data"; LOGS="$RUN/logs"; PIDF="$RUN/weed.pid"; OUT="$LOGS/weed.out"
ENDPOINT="http://127.0.0.1:$PORT"

say() { echo "s3-local: $*" >&2; }
# running() and stop() (SIGTERM: weed shuts its gateway, filer, volume and master down in order;
# SIGKILL after 30 s) are the brokers' own.
. "$(cd "$(dirname "$0")" && pwd)/common.sh"

build() {
  if [ -x "$BIN" ]; then echo "$BIN"; return 0; fi
  command -v go >/dev/null || { say "Go (go) is needed to build SeaweedFS"; exit 1; }
  mkdir -p "$CACHE"
  # One build at a time (two test sessions starting at once would each take 8 minutes of CPU).
  exec 9>"$CACHE/.build.lock"; flock 9
  if [ -x "$BIN" ]; then echo "$BIN"; return 0; fi
  say "building SeaweedFS $VERSION into $BIN (about 8 minutes the first time)"
  SRC="$(mktemp -d /var/tmp/spendlake-seaweedfs-src.XXXXXX)"
  trap 'rm -rf "$SRC"' EXIT
  # Outside any go.mod (the temp dir), so `go mod download` just fetches into the module cache.
  local dir
  dir="$(cd "$SRC" && go mod download -json "$MODULE@$VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  # The module cache is read-only; the build wants a writable tree.
  cp -r "$dir/." "$SRC/" && chmod -R u+w "$SRC"
  (cd "$SRC" && go build -o "$BIN.partial" ./weed) >&2
  mv "$BIN.partial" "$BIN"   # a killed build leaves no half-written binary under the final name
  rm -rf "$SRC"; trap - EXIT
  exec 9>&-   # release the lock now, not when a server started by this shell (fd inherited) exits
  echo "$BIN"
}

SIGN=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY")

# A signed HEAD of the bucket: proves the gateway, the credentials and the bucket, which an open
# port alone does not (the filer and the bucket come up after the S3 listener).
answers() { curl -sf -o /dev/null -m 5 -I "${SIGN[@]}" "$ENDPOINT/$BUCKET"; }

# A write (then its delete): after a restart on existing data the master refuses volume
# assignments for a warm-up of 15 s from its start (hard-coded in SeaweedFS: 3 heartbeats of 5 s),
# and meanwhile the gateway holds a PUT for ~10 s or fails it. So start returns only once a PUT
# goes through. (curl signs a PUT body only with an explicit x-amz-content-sha256.)
writes() {
  local url="$ENDPOINT/$BUCKET/.s3-local-ready"
  curl -sf -o /dev/null -m 30 -X PUT --data-binary ok -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
    "${SIGN[@]}" "$url" && curl -sf -o /dev/null -m 5 -X DELETE "${SIGN[@]}" "$url"
}

start() {
  if running; then say "already running (pid $(cat "$PIDF")) on $ENDPOINT"; return 0; fi
  build >/dev/null
  mkdir -p "$DATA" "$LOGS"
  : >"$OUT"
  # Every port is given explicitly: mini moves a busy *default* port elsewhere silently, but fails
  # on a busy explicit one. The Iceberg (8181) and Lance (9101) catalogs, WebDAV and the legacy
  # admin port are off; the admin server itself always runs (its UI is off), on loopback.
  # Telemetry is off (no calls home from tests). The run dir is the working directory, so no
  # stray filer.toml in the caller's directory can move the metadata store; the filer's and the
  # gateway's local sockets live there too (the gRPC ones stay in /tmp: rm_sockets). The two
  # AWS_* variables become the admin identity's credentials.
  # exec all the way down, so the pid of the background subshell is weed's; setsid: the server
  # must not die with the shell or test process that started it.
  (cd "$RUN" && exec env AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" \
    setsid nohup "$BIN" -logtostderr mini -dir="$DATA" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -bucket="$BUCKET" -s3.port="$PORT" -master.port=$((PORT + 1)) -filer.port=$((PORT + 2)) \
      -volume.port=$((PORT + 3)) -admin.port=$((PORT + 4)) -admin.port.legacy=0 -admin.ui=false \
      -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
      -filer.localSocket="$RUN/filer.sock" -s3.localSocket="$RUN/s3.sock") >"$OUT" 2>&1 </dev/null &
  echo $! >"$PIDF"
  local deadline=$((SECONDS + 120))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if answers && writes; then say "ready on $ENDPOINT, bucket $BUCKET, data $DATA (pid $(cat "$PIDF"))"; return 0; fi
    running || { say "weed died during start:"; tail -40 "$OUT" >&2; exit 1; }
    sleep 0.5
  done
  say "timed out waiting for the S3 server:"; tail -40 "$OUT" >&2; exit 1
}

# weed's gRPC unix sockets are named after the ports, in /tmp; a clean stop removes them, a kill
# leaves them (harmless: the next start replaces them).
rm_sockets() { for i in 0 1 2 3 4; do rm -f /tmp/seaweedfs-*-grpc-$((PORT + 10000 + i)).sock; done; }

case "${1:-}" in
  build) build ;;
  cached) [ -x "$BIN" ] ;;
  start) start ;;
  stop) stop ;;
  kill) if running; then
          pid="$(cat "$PIDF")"; kill -KILL "$pid"
          for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done  # ports free
        fi
        rm -f "$PIDF"; rm_sockets ;;
  status) running && answers ;;
  env) printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nAWS_ENDPOINT_URL=%s\nAWS_REGION=us-east-1\n' \
         "$ACCESS_KEY" "$SECRET_KEY" "$ENDPOINT" ;;
  wipe) stop; rm -rf "$DATA" ;;
  remove) stop; rm -rf "$RUN"; rm_sockets ;;
  -h|--help|help|"") sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; [ -n "${1:-}" ] ;;
  *) say "unknown command: $1 (try --help)"; exit 2 ;;
esac
