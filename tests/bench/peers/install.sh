#!/usr/bin/env bash
# `make bench`: install the peers' Debian packages (Postfix, Dovecot IMAP and POP3) if any is missing.
# Postfix gets "No configuration" (the bench writes its own, in a temporary directory). If this
# installs Dovecot on a systemd machine, the system's own Dovecot service is disabled again: the
# bench runs private instances and leaves no mail server listening behind it.
set -euo pipefail

PKGS="postfix dovecot-imapd dovecot-pop3d"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "make bench: the peers need$missing; install them as root (apt-get install$missing)," >&2
  echo "or measure Mailflow alone with: make bench PEERS=0" >&2
  exit 1
fi
echo "make bench: installing$missing (Debian packages for the peers Postfix + Dovecot)"
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq || true
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  case "$missing" in *dovecot*) systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true ;; esac
fi
