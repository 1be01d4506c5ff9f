#!/bin/sh
# The container's entrypoint: turns KIRO_CREDS_JSON (a whole kiro-auth-token.json in one secret,
# as on Hugging Face Spaces) into a token file under the data dir, then runs the command.
# The file is rewritten only when the secret changes, so tokens the gateway refreshed (and wrote
# back to it) survive a restart. Nothing here prints a token.
set -eu
if [ -n "${KIRO_CREDS_JSON:-}" ] && [ -z "${KIRO_CREDS_FILE:-}" ]; then
    dir="${KI2API_DATA_DIR:-/data}/secret-login"
    file="$dir/kiro-auth-token.json"
    umask 077
    mkdir -p "$dir"
    sum=$(printf '%s' "$KIRO_CREDS_JSON" | sha256sum | cut -d' ' -f1)
    if [ ! -s "$file" ] || [ "$(cat "$dir/secret.sha256" 2>/dev/null || true)" != "$sum" ]; then
        printf '%s' "$KIRO_CREDS_JSON" > "$file.tmp"
        mv "$file.tmp" "$file"
        echo "$sum" > "$dir/secret.sha256"
    fi
    KIRO_CREDS_FILE="$file"
    export KIRO_CREDS_FILE
fi
unset KIRO_CREDS_JSON
exec "$@"
