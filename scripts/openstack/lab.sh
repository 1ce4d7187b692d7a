#!/bin/bash
# AMVM OpenStack lab: a real Nova (Debian 12 / Zed) on one machine, two
# compute nodes in network namespaces.  See docs/openstack-fixture.md.
set -euo pipefail
# The system Python and tools: a pyenv python3 earlier in PATH lacks the Debian modules.
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
PY=/usr/bin/python3

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DIR=/tmp/amvm-openstack
BR=br-oslab
NET=10.250.0
NODES=(1 2)
T0=$(date +%s.%N)

PKGS=(nova-api nova-conductor nova-scheduler nova-compute-kvm placement-api
      glance-api keystone rabbitmq-server mariadb-server uwsgi-plugin-python3
      python3-openstackclient)

log() { printf "[lab %6.1fs] %s\n" "$(awk -v a="$(date +%s.%N)" -v b="$T0" "BEGIN{print a-b}")" "$*"; }
die() { echo "lab: error: $*" >&2; exit 1; }

cmd_deps() {
    local missing=() p
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then log "all packages already installed"; return 0; fi
    log "to install: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local sim
    sim=$(apt-get install -s --no-install-recommends "${missing[@]}") || die "apt-get -s failed"
    # Refuse anything that would install/upgrade/downgrade/remove a qemu* or
    # libvirt* package: the project relies on QEMU 10 from bookworm-backports.
    if echo "$sim" | grep -E '^(Inst|Remv|Purg) (qemu|libvirt)' ; then
        die "the install would change qemu/libvirt packages (above); aborting"
    fi
    log "simulation clean ($(echo "$sim" | grep -c '^Inst') packages); installing"
    local before; before=" $(pgrep -d' ' -x 'beam.smp|epmd|mariadbd|mysqld' || true) "
    apt-get install -y --no-install-recommends "${missing[@]}"
    # No systemd here and policy-rc.d denies starts, but a postinst may still
    # start something; stop such daemons by PID.
    local pid
    for pid in $(pgrep -x 'beam.smp|epmd|mariadbd|mysqld' || true); do
        case "$before" in *" $pid "*) continue ;; esac
        log "stopping daemon started by a postinst: $pid $(ps -o comm= -p "$pid")"
        kill "$pid" 2>/dev/null || true
    done
    log "deps done"
}

# ---------------------------------------------------------------- helpers
HOSTIP=$NET.254
DBPORT=3307
DBURL() { echo "mysql+pymysql://os:os@127.0.0.1:$DBPORT/$1?charset=utf8"; }

parse_dir() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --dir) DIR=$2; shift 2 ;;
            --dir=*) DIR=${1#--dir=}; shift ;;
            *) die "unknown argument $1" ;;
        esac
    done
    case "$DIR" in /*) ;; *) DIR=$(pwd)/$DIR ;; esac
    DIR=${DIR%/}
    [ "$DIR" != / ] && [ -n "$DIR" ] || die "bad --dir"
}

# start NAME CMD... : a new session (setsid), output in logs/NAME.out, pid in pids/NAME.pid.
# AMVM_OSLAB_DIR marks the environment so that `down` finds strays even without pid files.
start() {
    local name=$1; shift
    AMVM_OSLAB_DIR=$DIR setsid "$@" >"$DIR/logs/$name.out" 2>&1 </dev/null &
    echo $! >"$DIR/pids/$name.pid"
}

wait_port() {  # host port name [timeout]
    local i
    for ((i = 0; i < ${4:-120} * 5; i++)); do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    die "$3 did not open $1:$2 (see $DIR/logs/)"
}

alive() { [ -f "$DIR/pids/$1.pid" ] && kill -0 "$(cat "$DIR/pids/$1.pid")" 2>/dev/null; }

sql() { mariadb --no-defaults -uroot -S "$DIR/mysql/mysql.sock" "$@"; }

# ---------------------------------------------------------------- down
live() {  # exists and is not a zombie (no forks: this runs in a polling loop)
    local st
    { read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ]
}
kill_pids() {  # pids... : TERM to each process group (or process), KILL after 5 s to what is left
    [ $# -gt 0 ] || return 0
    local p q i watch=() left=()
    for p in "$@"; do
        watch+=("$p")
        for q in $(pgrep -g "$p" 2>/dev/null); do watch+=("$q"); done
    done
    for p in "$@"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
    for ((i = 0; i < 25; i++)); do
        left=()
        for p in "${watch[@]}"; do live "$p" && left+=("$p"); done
        [ ${#left[@]} -eq 0 ] && return 0
        sleep 0.2
    done
    log "down: SIGKILL for what outlasted SIGTERM: $(for p in "${left[@]}"; do ps -o comm= -p "$p"; done | sort -u | paste -sd' ')"
    for p in "${left[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done
}

stray_pids() {  # processes carrying our marker in their environment
    local e
    for e in /proc/[0-9]*/environ; do
        grep -qzx "AMVM_OSLAB_DIR=$DIR" "$e" 2>/dev/null && { e=${e#/proc/}; echo "${e%/environ}"; }
    done
    return 0
}

all_pids() {  # recorded sessions, everything in our network namespaces, marked strays
    local f n
    if [ -d "$DIR/pids" ]; then
        # only if it still carries our marker (a pid file may outlive its process; pids get reused)
        for f in "$DIR"/pids/*.pid; do
            [ -f "$f" ] && grep -qzx "AMVM_OSLAB_DIR=$DIR" "/proc/$(cat "$f")/environ" 2>/dev/null && cat "$f"
        done
    fi
    for n in "${NODES[@]}"; do
        ip netns list | grep -qw "oslab$n" && ip netns pids "oslab$n"
    done
    stray_pids
}

cmd_down() {
    local n
    # one TERM round for everything (nova-compute, libvirtd, virtlogd, the qemu guests that
    # libvirt daemonized out of our sessions, privsep helpers, holders, controllers), KILL after
    # 5 s for what outlasts it (nova-conductor does); then a second round for anything left.
    kill_pids $(all_pids | sort -un)
    kill_pids $(all_pids | sort -un)
    for n in "${NODES[@]}"; do
        ip netns del "oslab$n" 2>/dev/null || true
        ip link del "oslab$n-h" 2>/dev/null || true
    done
    ip link del "$BR" 2>/dev/null || true
    # mounts are made in private mount namespaces and die with them; catch leftovers anyway
    grep -F " $DIR/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$DIR"
    log "down: stopped, namespaces/veths/bridge removed, $DIR removed"
}

# ---------------------------------------------------------------- status
cmd_status() {
    local f name pid state rss total=0 count=0
    [ -d "$DIR/pids" ] || { echo "no lab in $DIR"; }
    for f in "$DIR"/pids/*.pid; do
        [ -f "$f" ] || continue
        name=$(basename "$f" .pid); pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then state=running; else state=DEAD; fi
        printf '%-16s %7s %s\n' "$name" "$pid" "$state"
    done
    for pid in $(stray_pids) $(for n in "${NODES[@]}"; do ip netns pids "oslab$n" 2>/dev/null; done | sort -u); do
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${rss:-0})); count=$((count + 1))
    done
    echo "processes: $count, RSS total: $((total / 1024)) MiB"
    echo "namespaces: $(ip netns list | grep -o 'oslab[0-9]*' | tr '\n' ' ')"
    ip -br addr show "$BR" 2>/dev/null || echo "bridge $BR: absent"
}

# ---------------------------------------------------------------- up
write_configs() {
    local E=$DIR/etc n
    mkdir -p "$E"
    cat >"$E/keystone.conf" <<K
[DEFAULT]
log_file = $DIR/logs/keystone.log
[database]
connection = $(DBURL keystone)
[token]
provider = fernet
[fernet_tokens]
key_repository = $DIR/keystone/fernet-keys
[fernet_receipts]
key_repository = $DIR/keystone/fernet-keys
[credential]
key_repository = $DIR/keystone/credential-keys
K
    mkdir -p "$E/placement"
    cat >"$E/placement/placement.conf" <<K
[DEFAULT]
log_file = $DIR/logs/placement.log
[placement_database]
connection = $(DBURL placement)
[api]
auth_strategy = noauth2
K
    cat >"$E/glance-api.conf" <<K
[DEFAULT]
bind_host = $HOSTIP
bind_port = 9292
workers = 1
log_file = $DIR/logs/glance-api.log
node_staging_uri = file://$DIR/glance/staging
[database]
connection = $(DBURL glance)
[paste_deploy]
flavor =
config_file = /etc/glance/glance-api-paste.ini
[glance_store]
stores = file,http
default_store = file
filesystem_store_datadir = $DIR/glance/images/
[oslo_concurrency]
lock_path = $DIR/lock/glance
[os_glance_staging_store]
filesystem_store_datadir = $DIR/glance/staging/
[os_glance_tasks_store]
filesystem_store_datadir = $DIR/glance/tasks/
K
    cat >"$E/nova-common.conf" <<K
[DEFAULT]
transport_url = rabbit://guest:guest@$HOSTIP:5672/
heal_instance_info_cache_interval = -1
[api]
auth_strategy = keystone
[keystone_authtoken]
www_authenticate_uri = http://$HOSTIP:5000/
auth_url = http://$HOSTIP:5000/
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = admin
username = admin
password = admin
interface = public
region_name = RegionOne
[placement]
auth_type = admin_token
endpoint = http://$HOSTIP:8778
token = admin
region_name = RegionOne
[neutron]
auth_type = admin_token
endpoint = http://$HOSTIP:9696
token = admin
region_name = RegionOne
[glance]
region_name = RegionOne
[cinder]
os_region_name = RegionOne
[oslo_messaging_notifications]
driver = noop
[vnc]
enabled = false
[spice]
enabled = false
[serial_console]
enabled = false
[service_user]
send_service_user_token = false
[workarounds]
skip_cpu_compare_on_dest = true
K
    cat >"$E/nova-ctl.conf" <<K
[DEFAULT]
my_ip = $HOSTIP
state_path = $DIR/nova/state
enabled_apis = osapi_compute
osapi_compute_listen = $HOSTIP
osapi_compute_listen_port = 8774
osapi_compute_workers = 1
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
[database]
connection = $(DBURL nova)
[api_database]
connection = $(DBURL nova_api)
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = -1
[oslo_concurrency]
lock_path = $DIR/lock/nova
K
    for n in "${NODES[@]}"; do
        local helper="privsep-helper --config-file $E/nova-common.conf --config-file $E/nova-cmp$n.conf"
        cat >"$E/nova-cmp$n.conf" <<K
[DEFAULT]
host = cmp$n
my_ip = $NET.$n
state_path = $DIR/ns$n/state
instances_path = /var/lib/nova/instances
compute_driver = libvirt.LibvirtDriver
reserved_host_memory_mb = 256
vif_plugging_is_fatal = false
vif_plugging_timeout = 0
[libvirt]
virt_type = qemu
cpu_mode = none
connection_uri = qemu:///system
live_migration_scheme = tcp
live_migration_inbound_addr = $NET.$n
[oslo_concurrency]
lock_path = $DIR/ns$n/lock
[nova_sys_admin]
helper_command = $helper
[privsep_osbrick]
helper_command = $helper
[vif_plug_linux_bridge_privileged]
helper_command = $helper
[vif_plug_ovs_privileged]
helper_command = $helper
[privsep]
helper_command = $helper
K
    done
    cat >"$E/rabbitmq.conf" <<K
loopback_users = none
listeners.tcp.default = 5672
K
}

write_node_files() {  # n
    local n=$1 N=$DIR/ns$1
    mkdir -p "$N"/{run-libvirt,var-lib-libvirt,log-libvirt,cache-libvirt,instances,state,lock}
    cp -a /etc/libvirt "$N/etc-libvirt"
    rm -f "$N"/etc-libvirt/qemu/networks/autostart/*
    cat >>"$N/etc-libvirt/libvirtd.conf" <<K

# amvm lab
listen_tls = 0
listen_tcp = 1
listen_addr = "$NET.$n"
auth_tcp = "none"
auth_unix_rw = "none"
auth_unix_ro = "none"
host_uuid = "0a5e1ab0-0000-4000-8000-00000000000$n"
K
    cat >>"$N/etc-libvirt/qemu.conf" <<K

# amvm lab
security_driver = "none"
user = "root"
group = "root"
cgroup_controllers = [ ]
namespaces = [ ]
K
    { grep -v cmp /etc/hosts; for m in "${NODES[@]}"; do echo "$NET.$m cmp$m"; done; echo "$HOSTIP oslab-ctl"; } >"$N/hosts"
    cat >"$N/hold.sh" <<K
#!/bin/bash
# runs as: ip netns exec oslab$n unshare -m -u --propagation private hold.sh
set -e
hostname cmp$n
mkdir -p /run/libvirt /var/lib/nova/instances
mount --bind $N/etc-libvirt /etc/libvirt
mount --bind $N/run-libvirt /run/libvirt
mount --bind $N/var-lib-libvirt /var/lib/libvirt
mount --bind $N/log-libvirt /var/log/libvirt
mount --bind $N/cache-libvirt /var/cache/libvirt
mount --bind $N/hosts /etc/hosts
mount --bind $N/instances /var/lib/nova/instances
touch $N/held
exec sleep infinity
K
    chmod +x "$N/hold.sh"
}

setup_net() {
    ip link add "$BR" type bridge
    ip addr add "$HOSTIP/24" dev "$BR"
    ip link set "$BR" up
    local n
    for n in "${NODES[@]}"; do
        ip netns add "oslab$n"
        ip link add "oslab$n-h" type veth peer name "oslab$n-g"
        ip link set "oslab$n-g" netns "oslab$n"
        ip link set "oslab$n-h" master "$BR" up
        ip -n "oslab$n" addr add "$NET.$n/24" dev "oslab$n-g"
        ip -n "oslab$n" link set "oslab$n-g" up
        ip -n "oslab$n" link set lo up
    done
}

nsrun() {  # name n cmd... : start inside node n's namespaces
    local name=$1 n=$2; shift 2
    start "$name" nsenter -t "$(cat "$DIR/pids/hold$n.pid")" -m -u -n "$@"
}

start_mariadb() {
    mkdir -p "$DIR/mysql/data"
    chown -R mysql:mysql "$DIR/mysql"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql/data" \
        --auth-root-authentication-method=normal --skip-test-db >"$DIR/logs/mariadb-install.out" 2>&1
    start mariadb mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql/data" \
        --socket="$DIR/mysql/mysql.sock" --port=$DBPORT --bind-address=127.0.0.1 \
        --pid-file="$DIR/mysql/mariadb.pid" --skip-name-resolve --max-connections=1000 \
        --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
        --log-error="$DIR/logs/mariadb.log"
    wait_port 127.0.0.1 $DBPORT mariadb 60
    sql -e "CREATE USER 'os'@'%' IDENTIFIED BY 'os'; GRANT ALL ON *.* TO 'os'@'%';
            CREATE DATABASE keystone; CREATE DATABASE placement; CREATE DATABASE glance;
            CREATE DATABASE nova_api; CREATE DATABASE nova; CREATE DATABASE nova_cell0;"
}

start_rabbit() {
    mkdir -p "$DIR/rabbit/mnesia" "$DIR/rabbit/log"
    cp "$DIR/etc/rabbitmq.conf" "$DIR/rabbit/rabbitmq.conf"
    : >"$DIR/rabbit/enabled_plugins"
    chown -R rabbitmq:rabbitmq "$DIR/rabbit"
    local env=(env HOME="$DIR/rabbit" RABBITMQ_NODENAME=rabbit@localhost
        RABBITMQ_MNESIA_BASE="$DIR/rabbit/mnesia" RABBITMQ_LOG_BASE="$DIR/rabbit/log"
        RABBITMQ_CONFIG_FILE="$DIR/rabbit/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/rabbit/enabled_plugins"
        RABBITMQ_PID_FILE="$DIR/rabbit/rabbit.pid")
    start epmd setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "${env[@]}" epmd
    wait_port 127.0.0.1 4369 epmd 20
    start rabbitmq setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "${env[@]}" \
        /usr/lib/rabbitmq/bin/rabbitmq-server
}

setup_keystone() {
    local K="--config-file $DIR/etc/keystone.conf"
    mkdir -p "$DIR/keystone/fernet-keys" "$DIR/keystone/credential-keys"
    local t=$SECONDS
    keystone-manage $K db_sync; echo "keystone db_sync: $((SECONDS - t)) s"
    keystone-manage $K fernet_setup --keystone-user root --keystone-group root
    keystone-manage $K credential_setup --keystone-user root --keystone-group root
    chmod 700 "$DIR/keystone/fernet-keys" "$DIR/keystone/credential-keys"
    keystone-manage $K bootstrap --bootstrap-password admin --bootstrap-region-id RegionOne \
        --bootstrap-admin-url "http://$HOSTIP:5000/v3/" --bootstrap-public-url "http://$HOSTIP:5000/v3/" \
        --bootstrap-internal-url "http://$HOSTIP:5000/v3/"
    start keystone uwsgi --plugin python3 --http-socket "$HOSTIP:5000" --wsgi-file /usr/bin/keystone-wsgi-public \
        --master --die-on-term --need-app --processes 1 --threads 4 --buffer-size 65535 \
        --add-header "Connection: close" \
        --env "OS_KEYSTONE_CONFIG_FILES=$DIR/etc/keystone.conf"
    wait_port "$HOSTIP" 5000 keystone 60
    # services + endpoints for compute, placement, image, network (the Neutron stub)
    $PY - "$HOSTIP" <<'PYK'
import sys, json, time, urllib.request
ip = sys.argv[1]; base = f"http://{ip}:5000/v3"
def req(method, path, body=None, token=None):
    r = urllib.request.Request(base + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **({"X-Auth-Token": token} if token else {})})
    with urllib.request.urlopen(r) as resp:
        return resp.headers.get("X-Subject-Token"), json.loads(resp.read() or b"{}")
auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin",
        "domain": {"name": "Default"}, "password": "admin"}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}
for i in range(50):
    try:
        tok, _ = req("POST", "/auth/tokens", auth); break
    except Exception:
        time.sleep(0.3)
else:
    sys.exit("keystone: no token")
for name, typ, url in [("nova", "compute", f"http://{ip}:8774/v2.1"),
                       ("placement", "placement", f"http://{ip}:8778"),
                       ("glance", "image", f"http://{ip}:9292"),
                       ("neutron", "network", f"http://{ip}:9696")]:
    _, s = req("POST", "/services", {"service": {"name": name, "type": typ}}, tok)
    for iface in ("public", "internal", "admin"):
        req("POST", "/endpoints", {"endpoint": {"service_id": s["service"]["id"], "interface": iface,
            "url": url, "region_id": "RegionOne"}}, tok)
print("keystone catalog: compute placement image network")
PYK
}

setup_nova_db() {
    local NM="nova-manage --config-file $DIR/etc/nova-common.conf --config-file $DIR/etc/nova-ctl.conf"
    local t=$SECONDS
    $NM api_db sync; echo "api_db sync: $((SECONDS - t)) s"
    $NM cell_v2 map_cell0 --database_connection "$(DBURL nova_cell0)"
    $NM cell_v2 create_cell --name cell1 >/dev/null; echo "cells: $((SECONDS - t)) s"
    $NM db sync; echo "db sync (cell1 + cell0): $((SECONDS - t)) s"
}

write_client_files() {
    cat >"$DIR/env" <<K
export OS_AUTH_URL=http://$HOSTIP:5000/v3
export OS_USERNAME=admin
export OS_PASSWORD=admin
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_IDENTITY_API_VERSION=3
export OS_REGION_NAME=RegionOne
export OS_INTERFACE=public
K
    cat >"$DIR/clouds.yaml" <<K
clouds:
  amvm-lab:
    auth:
      auth_url: http://$HOSTIP:5000/v3
      username: admin
      password: admin
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
K
}

bg() {  # name fn : run a setup step in the background, log to logs/NAME.setup
    local name=$1; shift
    ( local t=$SECONDS; "$@"; echo "took $((SECONDS - t)) s" ) >"$DIR/logs/$name.setup" 2>&1 &
    BGJOBS+=("$!:$name")
}
bg_wait() {
    local j rc=0
    for j in "${BGJOBS[@]}"; do
        if ! wait "${j%%:*}"; then echo "lab: setup step ${j#*:} failed; tail of $DIR/logs/${j#*:}.setup:" >&2
            tail -20 "$DIR/logs/${j#*:}.setup" >&2; rc=1; fi
    done
    [ $rc = 0 ] || die "setup failed"
    for j in "${BGJOBS[@]}"; do echo "${j#*}: $(tail -1 "$DIR/logs/${j#*:}.setup")"; done | sed 's/^[0-9]*:/  /' | paste -sd, | sed 's/^/[lab] setup steps:/'
    BGJOBS=()
}

cmd_up() {
    UP_OK=0
    trap '[ "$UP_OK" = 1 ] || echo "lab: up failed; logs in $DIR/logs; processes are left for inspection: $0 down --dir $DIR" >&2' EXIT
    if [ -e "$DIR" ] || ip link show "$BR" >/dev/null 2>&1 || ip netns list | grep -q oslab \
        || [ -n "$(stray_pids)" ]; then
        log "cleaning up a previous run"; cmd_down >/dev/null
    fi
    local busy
    busy=$(ss -Htln | awk '{print $4}' | grep -E ':(3307|4369|5000|5672|8774|8778|9292|9696)$' || true)
    [ -z "$busy" ] || die "ports in use (another lab or service?): $(echo $busy)"
    mkdir -p "$DIR"/{pids,logs,etc,lock/nova,lock/glance,glance/images,glance/staging,glance/tasks,nova/state}
    chmod 755 "$DIR"
    BGJOBS=()
    write_configs
    setup_net
    log "network: $BR $HOSTIP/24, namespaces oslab1/oslab2"
    for n in "${NODES[@]}"; do
        write_node_files "$n"
        start "hold$n" ip netns exec "oslab$n" unshare -m -u --propagation private "$DIR/ns$n/hold.sh"
    done
    start_rabbit
    start_mariadb
    log "mariadb up"
    for n in "${NODES[@]}"; do
        for ((i = 0; i < 50; i++)); do [ -e "$DIR/ns$n/held" ] && break; sleep 0.1; done
        [ -e "$DIR/ns$n/held" ] || die "namespace holder $n did not start (logs/hold$n.out)"
        nsrun "virtlogd$n" "$n" virtlogd -p /run/libvirt/virtlogd.pid
        nsrun "libvirtd$n" "$n" libvirtd --listen -p /run/libvirt/libvirtd.pid
    done
    write_neutron_stub
    start neutron-stub $PY "$DIR/neutron_stub.py" "$HOSTIP" 9696
    bg keystone setup_keystone
    bg nova-db setup_nova_db
    bg placement-db placement-manage --config-dir "$DIR/etc/placement" db sync
    bg glance-db glance-manage --config-file "$DIR/etc/glance-api.conf" db_sync
    bg_wait
    log "keystone up, databases synced"
    start placement uwsgi --plugin python3 --http-socket "$HOSTIP:8778" --wsgi-file /usr/bin/placement-api \
        --master --die-on-term --need-app --processes 1 --threads 4 --buffer-size 65535 \
        --add-header "Connection: close" \
        --env "OS_PLACEMENT_CONFIG_DIR=$DIR/etc/placement"
    start glance-api glance-api --config-file "$DIR/etc/glance-api.conf"
    wait_port "$HOSTIP" 5672 rabbitmq 60
    local NC="--config-file $DIR/etc/nova-common.conf --config-file $DIR/etc/nova-ctl.conf"
    start nova-api nova-api $NC --log-file "$DIR/logs/nova-api.log"
    start nova-conductor nova-conductor $NC --log-file "$DIR/logs/nova-conductor.log"
    start nova-scheduler nova-scheduler $NC --log-file "$DIR/logs/nova-scheduler.log"
    wait_port "$HOSTIP" 8778 placement 60
    for n in "${NODES[@]}"; do
        nsrun "nova-compute$n" "$n" nova-compute --config-file "$DIR/etc/nova-common.conf" \
            --config-file "$DIR/etc/nova-cmp$n.conf" --log-file "$DIR/logs/nova-compute$n.log"
    done
    wait_port "$HOSTIP" 9292 glance-api 60
    wait_port "$HOSTIP" 8774 nova-api 90
    log "controllers up; waiting for the compute nodes"
    local got=0
    for ((i = 0; i < 600; i++)); do
        got=$(sql -N nova -e "select count(*) from compute_nodes where deleted=0" 2>/dev/null || echo 0)
        [ "$got" -ge ${#NODES[@]} ] && break
        for n in "${NODES[@]}"; do alive "nova-compute$n" || die "nova-compute$n died (logs/nova-compute$n.log)"; done
        sleep 0.2
    done
    [ "$got" -ge ${#NODES[@]} ] || die "compute nodes did not register"
    nova-manage $NC cell_v2 discover_hosts >/dev/null 2>&1
    write_client_files
    # the API must answer an authenticated call with both hypervisors up before we say "up"
    OS_CLIENT_CONFIG_FILE=$DIR/clouds.yaml $PY - <<'PYW' || die "the compute API is not usable (logs/nova-api.log)"
import time, openstack
conn = openstack.connect(cloud="amvm-lab")
last = None
for i in range(120):
    try:
        r = conn.compute.get("/os-hypervisors/detail", microversion="2.53")
        if r.status_code == 200:
            up = [h for h in r.json()["hypervisors"] if h["state"] == "up"]
            if len(up) >= 2:
                break
            last = "%d hypervisors up" % len(up)
        else:
            last = "HTTP %s %s" % (r.status_code, r.text[:200])
    except Exception as e:
        last = repr(e)[:200]
    time.sleep(0.5)
else:
    raise SystemExit("compute API check failed: %s" % last)
PYW
    local f
    for f in "$DIR"/pids/*.pid; do
        alive "$(basename "$f" .pid)" || die "$(basename "$f" .pid) died (see $DIR/logs/)"
    done
    UP_OK=1
    log "up: 2 compute nodes registered; source $DIR/env or OS_CLIENT_CONFIG_FILE=$DIR/clouds.yaml --os-cloud amvm-lab"
}

write_neutron_stub() {
    cat >"$DIR/neutron_stub.py" <<'PYN'
# Neutron stub: Nova asks for ports/networks/extensions even for servers with networks "none".
# Every collection GET answers an empty list; everything else is 404 (or 204 for DELETE).
import json, re, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, code, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        if path in ("", "/v2.0"):
            return self.reply(200, {"versions": [{"id": "v2.0", "status": "CURRENT",
                "links": [{"rel": "self", "href": "http://%s:%s/v2.0/" % self.server.server_address}]}]})
        m = re.fullmatch(r"/v2\.0/([a-z_-]+)(?:\.json)?", path)
        if m:
            return self.reply(200, {m.group(1): []})
        self.reply(404, {"NeutronError": {"type": "NotFound", "message": "stub", "detail": ""}})
    do_POST = do_PUT = lambda self: self.reply(404, {"NeutronError": {"type": "NotFound", "message": "stub", "detail": ""}})
    def do_DELETE(self):
        self.reply(204)
    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.command, self.path))

ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
PYN
}

# ---------------------------------------------------------------- smoke
cmd_smoke() {
    [ -f "$DIR/clouds.yaml" ] || die "no lab in $DIR (run: $0 up --dir $DIR)"
    local G=$REPO/target/guest
    [ -f "$G/vmlinuz" ] && [ -f "$G/initrd.img" ] || die "guest missing: run scripts/build-guest.sh"
    export OS_CLIENT_CONFIG_FILE=$DIR/clouds.yaml
    local t=$(date +%s.%N)
    openstack --os-cloud amvm-lab hypervisor list
    log "smoke: openstack CLI hypervisor list: $(awk -v a="$(date +%s.%N)" -v b="$t" 'BEGIN{printf "%.1f", a-b}') s"
    $PY - "$G" "$DIR" <<'PYS'
import os, re, sys, time
import openstack
G, D = sys.argv[1], sys.argv[2]
T0 = time.time()
def log(msg): print("[smoke %6.1fs] %s" % (time.time() - T0, msg), flush=True)
def fail(msg): log("FAIL: " + msg); sys.exit(1)
conn = openstack.connect(cloud="amvm-lab")
MV = "2.37"
def nova(method, path, body=None, mv=MV, ok=(200, 201, 202, 204)):
    r = getattr(conn.compute, method)(path, json=body, microversion=mv) if body is not None \
        else getattr(conn.compute, method)(path, microversion=mv)
    if r.status_code not in ok:
        fail("%s %s -> %s %s" % (method.upper(), path, r.status_code, r.text[:500]))
    return r.json() if r.content else {}
def wait(what, fn, timeout):
    t = time.time()
    while time.time() - t < timeout:
        v = fn()
        if v:
            return v, time.time() - t
        time.sleep(0.25)
    fail("timeout (%ds) waiting for %s" % (timeout, what))

t = time.time()
hvs = nova("get", "/os-hypervisors/detail", mv="2.53")["hypervisors"]
up = sorted(h["hypervisor_hostname"] for h in hvs if h["state"] == "up" and h["status"] == "enabled")
log("hypervisors up: %s (%.2f s)" % (up, time.time() - t))
if len(up) != 2:
    fail("expected 2 hypervisors up, got %s" % [(h["hypervisor_hostname"], h["state"]) for h in hvs])

# images: kernel + ramdisk + an 8 MiB raw root disk that the initrd never touches
t = time.time()
root = os.path.join(D, "root.raw")
with open(root, "wb") as f:
    f.truncate(8 << 20)
def upload(name, path, **props):
    img = conn.image.create_image(name=name, filename=path, disk_format="raw",
                                  container_format="bare", wait=True, validate_checksum=False, **props)
    return img
ids = {}
ids["kernel"] = upload("amvm-smoke-kernel", os.path.join(G, "vmlinuz")).id
ids["ramdisk"] = upload("amvm-smoke-initrd", os.path.join(G, "initrd.img")).id
ids["root"] = upload("amvm-smoke-root", root, kernel_id=ids["kernel"], ramdisk_id=ids["ramdisk"],
                     os_command_line="console=ttyS0 panic=-1 amvm.mode=idle").id
log("images uploaded: %s (%.2f s)" % (ids, time.time() - t))

flv = conn.compute.find_flavor("amvm.tiny")
if flv is None:
    flv = conn.compute.create_flavor(name="amvm.tiny", ram=128, vcpus=1, disk=1)
rc = 0
sid = None
try:
    t = time.time()
    srv = nova("post", "/servers", {"server": {"name": "amvm-smoke", "imageRef": ids["root"],
               "flavorRef": flv.id, "networks": "none"}})["server"]
    sid = srv["id"]
    def active():
        s = nova("get", "/servers/" + sid)["server"]
        if s["status"] == "ERROR":
            fail("server ERROR: %s" % s.get("fault"))
        return s if s["status"] == "ACTIVE" else None
    s, dt = wait("ACTIVE", active, 180)
    src = s["OS-EXT-SRV-ATTR:host"]
    log("server %s ACTIVE on %s: %.2f s after POST" % (sid, src, time.time() - t))

    def console(marker):
        out = nova("post", "/servers/%s/action" % sid, {"os-getConsoleOutput": {"length": 50}}).get("output", "")
        return out if marker in out else None
    def seqs(out):
        return [int(m) for m in re.findall(r"amvm-heartbeat seq=(\d+)", out)]
    # TCG boot: 12-20 s on an idle 2-core machine, 50 s seen under load
    out, dt = wait("guest heartbeat on the console", lambda: console("amvm-heartbeat"), 300)
    pre = max(seqs(out))
    log("guest heartbeat on %s %.2f s after ACTIVE (seq=%d)" % (src, dt, pre))

    t = time.time()
    nova("post", "/servers/%s/action" % sid, {"os-migrateLive": {"host": None, "block_migration": "auto"}})
    def migrated():
        s = nova("get", "/servers/" + sid)["server"]
        if s["status"] == "ERROR":
            fail("server ERROR after migration: %s" % s.get("fault"))
        migs = nova("get", "/os-migrations?instance_uuid=" + sid, mv="2.59")["migrations"]
        live = [m for m in migs if m["migration_type"] == "live-migration"]
        if live and live[0]["status"] in ("error", "failed", "cancelled"):
            fail("migration %s" % live[0]["status"])
        if live and live[0]["status"] == "completed" and s["status"] == "ACTIVE":
            return s, live[0]
        return None
    (s, mig), dt = wait("live migration", migrated, 300)
    dst = s["OS-EXT-SRV-ATTR:host"]
    log("live migration %s -> %s completed: %.2f s (migration %s: %s -> %s)" % (
        src, dst, dt, mig["id"], mig["source_compute"], mig["dest_compute"]))
    if dst == src:
        fail("host did not change (%s)" % dst)
    t = time.time()
    # the console log is read on the destination now; the guest must still be running the same
    # boot (its heartbeat counter goes on past the last value seen before the migration)
    out, dt = wait("guest heartbeat after migration", lambda: (lambda o: o if o and max(seqs(o)) > pre else None)(console("amvm-heartbeat")), 60)
    log("guest alive on %s after migration: heartbeat seq=%d > %d (%.2f s)" % (dst, max(seqs(out)), pre, dt))
finally:
    if sid:
        t = time.time()
        conn.compute.delete("/servers/" + sid, microversion=MV)
        def gone():
            r = conn.compute.get("/servers/" + sid, microversion=MV)
            return r.status_code == 404
        try:
            _, dt = wait("delete", gone, 120)
            log("server deleted: %.2f s" % dt)
        finally:
            pass
    for i in ids.values():
        conn.image.delete_image(i, ignore_missing=True)
log("smoke OK")
PYS
}

case "${1:-}" in
    deps) shift; cmd_deps ;;
    up) shift; parse_dir "$@"; cmd_up ;;
    down) shift; parse_dir "$@"; cmd_down ;;
    status) shift; parse_dir "$@"; cmd_status ;;
    smoke) shift; parse_dir "$@"; cmd_smoke ;;
    *) echo "usage: $0 deps | {up|down|status|smoke} [--dir DIR]" >&2; exit 2 ;;
esac
