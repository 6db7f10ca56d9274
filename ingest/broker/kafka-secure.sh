#!/usr/bin/env bash
# A throw-away single-node Apache Kafka (KRaft) broker on 127.0.0.1 whose clients must
# authenticate: SASL_SSL (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN) and mutual TLS. Same jars as
# kafka-local.sh; certificates, users and passwords are made on first start, in the run dir.
#
#   kafka-secure.sh libs                fetch the broker jars once (kafka-local.sh's cache)
#   kafka-secure.sh certs               make the CA, certificates, keystores and passwords (once)
#   kafka-secure.sh start               certs, format on first start (SCRAM users), start, wait
#   kafka-secure.sh stop                SIGTERM, wait, SIGKILL after 30 s
#   kafka-secure.sh status              exit 0 when the broker answers over SASL_SSL (SCRAM)
#   kafka-secure.sh topic NAME [PARTS]  create a topic (idempotent)
#   kafka-secure.sh env                 print listeners, users, passwords and file paths (KEY=VALUE)
#   kafka-secure.sh remove              stop and delete the whole run dir (data, certificates, secrets)
#
# Listeners (P = KAFKA_PORT):
#   P    SASL_SSL   SCRAM-SHA-512 / SCRAM-SHA-256 user $SCRAM_USER, PLAIN user $PLAIN_USER
#   P+1  SSL        mutual TLS: ssl.client.auth=required, client certificates signed by our CA
#   P+2  PLAINTEXT  inter-broker and admin (loopback only)
#   P+3  CONTROLLER
#
# Files in $KAFKA_HOME/tls (PEM unless said): ca.pem; broker.pem (SANs IP:127.0.0.1,
# DNS:localhost) in broker.p12; truststore.p12 (our CA); client.pem with client.key and the
# same key encrypted as client.enc.key (password CLIENT_KEY_PASSWORD); an untrusted rogue-ca.pem
# with rogue-client.pem / rogue-client.key. Passwords are random, in $KAFKA_HOME/secrets.env
# (mode 600); nothing secret lives in the repository.
#
# Environment (all optional):
#   KAFKA_VERSION   KAFKA_LIBS   KAFKA_HEAP_OPTS   as for kafka-local.sh
#   KAFKA_PORT      first port of the four                        (default 9392)
#   KAFKA_HOME      run dir                                       (default /var/tmp/spendlake-kafka-secure-$KAFKA_PORT)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION="${KAFKA_VERSION:-4.1.1}"
PORT="${KAFKA_PORT:-9392}"
MPORT="$((PORT + 1))"; IPORT="$((PORT + 2))"; CPORT="$((PORT + 3))"
RUN="${KAFKA_HOME:-/var/tmp/spendlake-kafka-secure-$PORT}"
LIBS="${KAFKA_LIBS:-${XDG_CACHE_HOME:-$HOME/.cache}/spendlake/kafka-$VERSION/libs}"
DATA="$RUN/data"; LOGS="$RUN/logs"; PIDF="$RUN/kafka.pid"; OUT="$LOGS/kafkaServer.out"
CONF="$RUN/server.properties"; TLS="$RUN/tls"; SECRETS="$RUN/secrets.env"
PROBE="$RUN/client-scram.properties"
BOOT="127.0.0.1:$PORT"; INTERNAL="127.0.0.1:$IPORT"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
HEAP="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
CP="$LIBS/*"
DAYS=30

say() { echo "kafka-secure: $*" >&2; }
. "$HERE/common.sh"
secret() { openssl rand -hex 16; }

fetch_libs() {
  KAFKA_VERSION="$VERSION" KAFKA_LIBS="$LIBS" bash "$HERE/kafka-local.sh" libs >/dev/null
}

# A CA: NAME.key, NAME.pem.
ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -days "$DAYS" -keyout "$TLS/$1.key" -out "$TLS/$1.pem" \
    -subj "/O=spendlake tests/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# A certificate NAME.pem with key NAME.key, signed by the CA named ISSUER, with extensions EXT.
leaf() {
  local name="$1" issuer="$2" cn="$3" ext="$4"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$TLS/$name.key" -out "$TLS/$name.csr" \
    -subj "/O=spendlake tests/CN=$cn" 2>/dev/null
  printf '%b\n' "$ext" >"$TLS/$name.ext"
  openssl x509 -req -in "$TLS/$name.csr" -CA "$TLS/$issuer.pem" -CAkey "$TLS/$issuer.key" \
    -set_serial "0x$(openssl rand -hex 8)" -days "$DAYS" -extfile "$TLS/$name.ext" \
    -out "$TLS/$name.pem" 2>/dev/null
  rm -f "$TLS/$name.csr" "$TLS/$name.ext"
}

certs() {
  if [ -f "$TLS/.complete" ]; then return 0; fi
  command -v openssl >/dev/null || { say "openssl is needed to make the test certificates"; exit 1; }
  command -v keytool >/dev/null || { say "keytool (from the JDK) is needed to make the truststore"; exit 1; }
  rm -rf "$TLS"; mkdir -p "$TLS"; chmod 700 "$RUN" "$TLS"
  (umask 077; {
    echo "SCRAM_USER=alice"; echo "SCRAM_PASSWORD=$(secret)"
    echo "PLAIN_USER=bob"; echo "PLAIN_PASSWORD=$(secret)"
    echo "CLIENT_KEY_PASSWORD=$(secret)"; echo "STORE_PASSWORD=$(secret)"
  } >"$SECRETS")
  # shellcheck disable=SC1090
  . "$SECRETS"
  export CLIENT_KEY_PASSWORD STORE_PASSWORD  # read by openssl and keytool via env:, never argv
  ca ca "spendlake test CA"
  ca rogue-ca "rogue CA"
  leaf broker ca localhost "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth"
  leaf client ca spendlake-client "extendedKeyUsage=clientAuth"
  leaf rogue-client rogue-ca spendlake-client "extendedKeyUsage=clientAuth"
  openssl pkcs8 -topk8 -v2 aes-256-cbc -in "$TLS/client.key" -out "$TLS/client.enc.key" \
    -passout env:CLIENT_KEY_PASSWORD
  openssl pkcs12 -export -name broker -in "$TLS/broker.pem" -inkey "$TLS/broker.key" \
    -certfile "$TLS/ca.pem" -out "$TLS/broker.p12" -passout env:STORE_PASSWORD
  keytool -importcert -noprompt -alias ca -file "$TLS/ca.pem" -keystore "$TLS/truststore.p12" \
    -storetype PKCS12 -storepass:env STORE_PASSWORD >/dev/null 2>&1
  chmod 600 "$TLS"/*
  touch "$TLS/.complete"
  say "certificates and passwords made in $TLS"
}

load_secrets() {
  [ -f "$SECRETS" ] || { say "no $SECRETS: run '$0 certs' (or start) first"; exit 1; }
  # shellcheck disable=SC1090
  . "$SECRETS"
}

write_conf() {
  mkdir -p "$RUN" "$LOGS"
  (umask 077
   sed -e "s#@PORT@#$PORT#g" -e "s#@MPORT@#$MPORT#g" -e "s#@IPORT@#$IPORT#g" -e "s#@CPORT@#$CPORT#g" \
     -e "s#@DATA@#$DATA#g" -e "s#@TLS@#$TLS#g" -e "s#@STOREPASS@#$STORE_PASSWORD#g" \
     -e "s#@PLAIN_USER@#$PLAIN_USER#g" -e "s#@PLAIN_PASSWORD@#$PLAIN_PASSWORD#g" \
     "$HERE/server-secure.properties.in" >"$CONF"
   # what `status` (and anyone) uses to talk SCRAM-SHA-512 over the SASL_SSL listener
   cat >"$PROBE" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$SCRAM_USER" password="$SCRAM_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem
EOF
  )
}

format_once() {
  if [ -f "$DATA/meta.properties" ]; then return 0; fi
  mkdir -p "$DATA"
  local cid; cid="$(tool kafka.tools.StorageTool random-uuid)"
  tool kafka.tools.StorageTool format -t "$cid" -c "$CONF" \
    --add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$SCRAM_PASSWORD]" \
    --add-scram "SCRAM-SHA-256=[name=$SCRAM_USER,password=$SCRAM_PASSWORD]" >&2
}

answers() {  # over SASL_SSL with SCRAM: proves the certificates and the users, not only the port
  tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOT" --command-config "$PROBE" \
    --list >/dev/null 2>&1
}

start() {
  if running; then say "already running (pid $(cat "$PIDF")) on $BOOT"; return 0; fi
  fetch_libs; certs; load_secrets; write_conf; format_once
  launch "ready: SASL_SSL $BOOT, mTLS 127.0.0.1:$MPORT, PLAINTEXT $INTERNAL, run dir $RUN"
}

print_env() {
  load_secrets
  cat <<EOF
SASL_SSL_BOOTSTRAP=$BOOT
MTLS_BOOTSTRAP=127.0.0.1:$MPORT
PLAINTEXT_BOOTSTRAP=$INTERNAL
SCRAM_USER=$SCRAM_USER
SCRAM_PASSWORD=$SCRAM_PASSWORD
PLAIN_USER=$PLAIN_USER
PLAIN_PASSWORD=$PLAIN_PASSWORD
CLIENT_KEY_PASSWORD=$CLIENT_KEY_PASSWORD
CA=$TLS/ca.pem
CLIENT_CERT=$TLS/client.pem
CLIENT_KEY=$TLS/client.key
CLIENT_ENC_KEY=$TLS/client.enc.key
ROGUE_CA=$TLS/rogue-ca.pem
ROGUE_CLIENT_CERT=$TLS/rogue-client.pem
ROGUE_CLIENT_KEY=$TLS/rogue-client.key
EOF
}

case "${1:-}" in
  libs) fetch_libs; echo "$LIBS" ;;
  certs) certs ;;
  start) start ;;
  stop) stop ;;
  status) running && load_secrets && [ -f "$PROBE" ] && answers ;;
  topic)
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$INTERNAL" \
      --create --if-not-exists --topic "$2" --partitions "${3:-1}" --replication-factor 1 >&2 ;;
  env) print_env ;;
  remove) stop; rm -rf "$RUN" ;;
  -h|--help|help|"") sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; [ -n "${1:-}" ] ;;
  *) say "unknown command: $1 (try --help)"; exit 2 ;;
esac
