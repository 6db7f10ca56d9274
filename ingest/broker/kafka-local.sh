#!/usr/bin/env bash
# A throw-away single-node Apache Kafka (KRaft) broker on 127.0.0.1, assembled from Maven Central.
#
#   kafka-local.sh libs                 fetch the broker jars once (cached outside the work tree)
#   kafka-local.sh cached               exit 0 when the jars are already cached (nothing to fetch)
#   kafka-local.sh start                fetch if needed, format on first start, start, wait until ready
#   kafka-local.sh stop                 SIGTERM, wait, SIGKILL after 30 s
#   kafka-local.sh kill                 SIGKILL (crash tests)
#   kafka-local.sh status               exit 0 when the broker answers
#   kafka-local.sh topic NAME [PARTS]   create a topic (idempotent)
#   kafka-local.sh wipe                 stop and delete the data directory
#   kafka-local.sh remove               stop and delete the whole run dir (data, logs, config)
#
# Environment (all optional):
#   KAFKA_VERSION      broker version from Maven Central            (default 4.1.1)
#   KAFKA_PORT         PLAINTEXT listener port                      (default 9092)
#   KAFKA_HOME         run dir: data, logs, pid, server.properties  (default /var/tmp/spendlake-kafka-$KAFKA_PORT)
#   KAFKA_LIBS         jar cache                                    (default ~/.cache/spendlake/kafka-$KAFKA_VERSION/libs)
#   KAFKA_HEAP_OPTS    JVM heap                                     (default -Xms256m -Xmx512m)
#
# Ready means the broker logged "Kafka Server started" AND answers a metadata request: an open
# port alone is not enough (the controller may still be electing itself).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION="${KAFKA_VERSION:-4.1.1}"
PORT="${KAFKA_PORT:-9092}"
CPORT="$((PORT + 1))"
RUN="${KAFKA_HOME:-/var/tmp/spendlake-kafka-$PORT}"
LIBS="${KAFKA_LIBS:-${XDG_CACHE_HOME:-$HOME/.cache}/spendlake/kafka-$VERSION/libs}"
DATA="$RUN/data"; LOGS="$RUN/logs"; PIDF="$RUN/kafka.pid"; OUT="$LOGS/kafkaServer.out"
CONF="$RUN/server.properties"
BOOT="127.0.0.1:$PORT"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
HEAP="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
CP="$LIBS/*"

say() { echo "kafka-local: $*" >&2; }
. "$HERE/common.sh"

fetch_libs() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { say "Maven (mvn) is needed to fetch the broker jars"; exit 1; }
  say "fetching Apache Kafka $VERSION jars from Maven Central into $LIBS"
  mkdir -p "$LIBS"
  mvn -B -q -f "$HERE/pom.xml" -Dkafka.version="$VERSION" \
    org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS" >&2
  ls "$LIBS"/kafka_2.13-"$VERSION".jar >/dev/null
  touch "$LIBS/.complete"
}

write_conf() {
  mkdir -p "$RUN" "$LOGS"
  sed -e "s#@PORT@#$PORT#g" -e "s#@CPORT@#$CPORT#g" -e "s#@DATA@#$DATA#g" \
    "$HERE/server.properties.in" >"$CONF"
}

format_once() {
  if [ -f "$DATA/meta.properties" ]; then return 0; fi
  mkdir -p "$DATA"
  local cid; cid="$(tool kafka.tools.StorageTool random-uuid)"
  tool kafka.tools.StorageTool format -t "$cid" -c "$CONF" >&2
}

answers() {
  tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOT" --list >/dev/null 2>&1
}

start() {
  if running; then say "already running (pid $(cat "$PIDF")) on $BOOT"; return 0; fi
  fetch_libs; write_conf; format_once
  launch "ready on $BOOT, data $DATA"
}

case "${1:-}" in
  libs) fetch_libs; echo "$LIBS" ;;
  cached) [ -f "$LIBS/.complete" ] ;;
  start) start ;;
  stop) stop ;;
  kill) running && kill -KILL "$(cat "$PIDF")"; sleep 0.5; rm -f "$PIDF" ;;
  status) running && answers ;;
  topic)
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOT" \
      --create --if-not-exists --topic "$2" --partitions "${3:-1}" --replication-factor 1 >&2 ;;
  wipe) stop; rm -rf "$DATA" ;;
  remove) stop; rm -rf "$RUN" ;;
  -h|--help|help|"") sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; [ -n "${1:-}" ] ;;
  *) say "unknown command: $1 (try --help)"; exit 2 ;;
esac
