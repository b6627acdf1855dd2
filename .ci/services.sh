#!/usr/bin/env bash
# Make sure the services the test suite talks to are installed and running: PostgreSQL on
# 127.0.0.1:5432, Mosquitto on 127.0.0.1:1883 and headless Chromium with its driver.
# On Debian as root it installs and starts what is missing; elsewhere it says what is missing.
set -uo pipefail

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
is_root() { [ "$(id -u)" = 0 ]; }
have_apt() { command -v apt-get >/dev/null 2>&1; }
apt_updated=0
apt_install() {
    if ! is_root || ! have_apt; then
        echo "services: missing $*; install it (Debian: apt-get install $*)" >&2
        return 1
    fi
    if [ "$apt_updated" = 0 ]; then apt-get update -qq && apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
wait_port() {
    for _ in $(seq 1 60); do listening "$1" && return 0; sleep 0.5; done
    return 1
}
status=0

# PostgreSQL
if [ -z "${ITS_TEST_DATABASE_URL:-}" ] && ! listening 5432; then
    command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql || status=1
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
        if [ -z "$version" ]; then
            echo "services: no PostgreSQL cluster configured" >&2; status=1
        else
            conf=/etc/postgresql/$version/main/pg_hba.conf
            if [ -f "$conf" ] && ! grep -q "its-test trust" "$conf"; then
                sed -i '1i host all all 127.0.0.1/32 trust # its-test trust' "$conf"
            fi
            pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
            wait_port 5432 || { echo "services: PostgreSQL did not start" >&2; status=1; }
        fi
    fi
fi

# Mosquitto
if [ -z "${ITS_TEST_MQTT_URL:-}" ] && ! listening 1883; then
    command -v mosquitto >/dev/null 2>&1 || apt_install mosquitto || status=1
    if command -v mosquitto >/dev/null 2>&1; then
        mosquitto -d -c /etc/mosquitto/mosquitto.conf
        wait_port 1883 || { echo "services: Mosquitto did not start" >&2; status=1; }
    fi
fi

# Chromium and its driver for the browser tests
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    apt_install chromium chromium-driver || status=1
fi

[ "$status" = 0 ] && echo "services: PostgreSQL, Mosquitto and Chromium ready" >&2
exit "$status"
