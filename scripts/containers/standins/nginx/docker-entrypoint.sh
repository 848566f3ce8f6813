#!/bin/sh
# Like the official image's 20-envsubst-on-templates.sh: every /etc/nginx/templates/X.template becomes
# /etc/nginx/conf.d/X with only the *defined* variables whose names match NGINX_ENVSUBST_FILTER substituted
# (default here: NGINX_), so nginx's own $variables are left alone.
set -eu
template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
filter="${NGINX_ENVSUBST_FILTER:-NGINX_}"
if [ -d "$template_dir" ]; then
    defined="$(env | cut -d= -f1 | grep -E -- "$filter" | sed 's/.*/${&}/' | tr '\n' ' ' || true)"
    for template in "$template_dir"/*"$suffix"; do
        [ -f "$template" ] || continue
        name="$(basename "$template" "$suffix")"
        echo "stand-in nginx: $template -> $output_dir/$name" >&2
        envsubst "$defined" <"$template" >"$output_dir/$name"
    done
fi
exec "$@"
