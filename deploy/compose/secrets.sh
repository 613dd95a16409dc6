#!/usr/bin/env bash
# Write the compose stack's secrets to .env (mode 0600) unless it has them already:
#   bash deploy/compose/secrets.sh [path/to/.env]
# docker compose reads .env beside docker-compose.yml. Existing values are kept, so running it again
# never changes a token or the database password of a stack that already has data.
set -euo pipefail
env_file="${1:-.env}"
touch "$env_file"
chmod 600 "$env_file"
for name in MAILFLOW_SERVICE_TOKEN MAILFLOW_ADMIN_TOKEN MAILFLOW_SESSION_KEY MAILFLOW_WEB_SESSION_KEY MAILFLOW_POSTGRES_PASSWORD MAILFLOW_RSPAMD_PASSWORD; do
    if ! grep -q "^${name}=." "$env_file"; then
        printf '%s=%s\n' "$name" "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$env_file"
    fi
done
# Each service's NATS password: a letter, then hex (nats-server reads it from its environment as a value
# of its configuration language, where one starting with digits could be taken for a number).
for service in SMTP_INGRESS QUEUE DELIVERY RESOLVER MAILBOX_STORE IMAP_POP3 WEB; do
    name="MAILFLOW_NATS_PASSWORD_${service}"
    if ! grep -q "^${name}=." "$env_file"; then
        printf '%s=n%s\n' "$name" "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$env_file"
    fi
done
echo "secrets in $env_file"
