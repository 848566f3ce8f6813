# Shell functions shared by scripts/install.sh, scripts/containers/base-images.sh and scripts/clean-machine.sh.
# Source it; it defines functions only.

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
