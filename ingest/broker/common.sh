# Shared by kafka-local.sh and kafka-secure.sh (sourced, not run): starting, waiting for and
# stopping one broker process; s3-local.sh takes running() and stop() from here too. The caller
# sets HERE, JAVA, HEAP, CP, LOGS, OUT, PIDF, CONF and defines say() and answers() (exit 0 once
# the broker serves a request on its client listener).

tool() { "$JAVA" -Xmx256m -Dlog4j2.configurationFile="$HERE/tools-log4j2.properties" -cp "$CP" "$@"; }
running() { [ -f "$PIDF" ] && kill -0 "$(cat "$PIDF")" 2>/dev/null; }

# launch READY_MESSAGE: start the broker in the background and wait until it is ready.
# Ready means it logged "Kafka Server started" AND answers: an open port alone is not enough
# (the controller may still be electing itself).
launch() {
  : >"$OUT"
  # setsid: the broker must not die with the shell or test process that started it.
  setsid nohup "$JAVA" $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dkafka.logs.dir="$LOGS" -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
    -cp "$CP" kafka.Kafka "$CONF" >"$OUT" 2>&1 </dev/null &
  echo $! >"$PIDF"
  for _ in $(seq 1 240); do                                   # up to 120 s
    if grep -q 'Kafka Server started' "$OUT" 2>/dev/null && answers; then
      say "$1 (pid $(cat "$PIDF"))"; return 0
    fi
    running || { say "broker died during start:"; tail -40 "$OUT" >&2; exit 1; }
    sleep 0.5
  done
  say "timed out waiting for the broker:"; tail -40 "$OUT" >&2; exit 1
}

# SIGTERM, wait up to 30 s, then SIGKILL.
stop() {
  running || { rm -f "$PIDF"; return 0; }
  local pid; pid="$(cat "$PIDF")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDF"; say "stopped"
}
