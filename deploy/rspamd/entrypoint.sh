#!/bin/sh
# rspamd's container: refuse to start the controller without its password. The configuration takes it
# from RSPAMD_CONTROLLER_PASSWORD (override.d/worker-controller.inc); empty would leave /learnspam,
# /learnham and the web interface to anyone who reaches port 11334. Other commands (redis-server) run as given.
set -eu
if [ "${1:-}" = "rspamd" ] && [ -z "${RSPAMD_CONTROLLER_PASSWORD:-}" ]; then
    echo "rspamd-entrypoint: RSPAMD_CONTROLLER_PASSWORD is empty (compose: deploy/compose/secrets.sh; k8s: Secret mailflow-rspamd)" >&2
    exit 1
fi
exec "$@"
