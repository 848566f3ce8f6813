# Shell functions shared by scripts/install.sh, scripts/k8s/tools.sh, scripts/containers/base-images.sh,
# scripts/clean-machine.sh and bench/tools.sh. Source it; it defines functions only. as_root and apt_install call the caller's `log`.

# The first URI of a deb source for SUITE, from the machine's own apt configuration (deb822 or one-line style);
# no mirror name is written into the repository.
apt_uri() {
    local suite="$1" file uri=""
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        uri="$(awk -v want="$suite" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; suites = ""; types = ""
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", line); uris = line }
                    else if (line ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", line); suites = " " line " " }
                    else if (line ~ /^Types:/) { types = line " " }
                }
                if (types ~ /[ :]deb / && index(suites, " " want " ")) { split(uris, u, " "); print u[1]; exit }
            }' "$file")"
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] || continue
        uri="$(sed -e 's/\[[^]]*\]//' "$file" | awk -v want="$suite" '$1 == "deb" && $3 == want { print $2; exit }')"
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
}

# Runs a command as root: directly when root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "needs root for: $*"
        log "run it as root, or install sudo and give this user sudo rights"
        exit 1
    fi
}

apt_install() {
    # No package may start a system service here: nginx on port 80, Prometheus on 9090, Alertmanager on 9093 and
    # PostgreSQL on 5432 would take ports the compose stack publishes or the benchmarks' own servers could want. policy-rc.d (exit 101) refuses the start during the
    # install; units the install enabled are disabled after it, so a reboot does not start them either.
    local added=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 755 /usr/sbin/policy-rc.d
        added=1
    fi
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" || rc=$?
    if [ -n "$added" ]; then
        as_root rm -f /usr/sbin/policy-rc.d
    fi
    [ "$rc" -eq 0 ] || exit "$rc"
    if [ -d /run/systemd/system ]; then
        case " $* " in *" nginx-light "*) as_root systemctl disable --now nginx >/dev/null 2>&1 || true ;; esac
        case " $* " in *" prometheus "*) as_root systemctl disable --now prometheus >/dev/null 2>&1 || true ;; esac
        case " $* " in *" prometheus-alertmanager "*)
            as_root systemctl disable --now prometheus-alertmanager >/dev/null 2>&1 || true ;;
        esac
        case " $* " in *" postgresql-"[0-9]*) as_root systemctl disable --now postgresql >/dev/null 2>&1 || true ;; esac
    fi
}
