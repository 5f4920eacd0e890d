#!/usr/bin/env bash
# Run a command with an MQTT broker on 127.0.0.1:${NMCORE_MQTT_PORT:-1883}: use the one that
# answers there, or start a private mosquitto for the command's lifetime.
set -euo pipefail
port=${NMCORE_MQTT_PORT:-1883}
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  exec "$@"
fi
dir=$(mktemp -d)
cat >"$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
set_tcp_nodelay true
log_dest stderr
log_type error
CONF
broker_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)  # /usr/sbin: not on user PATHs
# Its own session: a Ctrl-C (or `timeout`) signals the whole foreground group, and a broker
# gone first makes the daemon's last status publish fail with a socket error at every stop.
# The broker goes after the command, from the traps below.
setsid "$broker_bin" -c "$dir/mosquitto.conf" &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$dir"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "with-broker: started mosquitto on 127.0.0.1:$port (pid $broker)" >&2
"$@"
