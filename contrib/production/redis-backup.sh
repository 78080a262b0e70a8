#!/bin/sh
# Copy a fresh snapshot of mirrorbits' Redis to DESTDIR; run it daily (cron or a systemd timer) on
# the Redis host, ideally on a replica, whose fork does not slow the master down.
#   redis-backup.sh /var/backups/mirrorbits -h 127.0.0.1 -p 6379
#   redis-backup.sh /var/backups/mirrorbits -s /var/lib/mirrorbits/redis.sock   # RedisAddress: embedded
# The remaining arguments are redis-cli's connection options (add -a or REDISCLI_AUTH for a password).
set -eu
dest=$1
shift
before=$(redis-cli "$@" LASTSAVE)
sleep 1  # LASTSAVE counts seconds: ours must end later than the previous one
redis-cli "$@" BGSAVE SCHEDULE >/dev/null
tries=0
while [ "$(redis-cli "$@" LASTSAVE)" = "$before" ]; do
    tries=$((tries + 1))
    [ "$tries" -le 600 ] || { echo "redis-backup: no new snapshot after 10 minutes" >&2; exit 1; }
    sleep 1
done
redis-cli "$@" INFO persistence | grep -q '^rdb_last_bgsave_status:ok' \
    || { echo "redis-backup: the snapshot failed (see the Redis log)" >&2; exit 1; }
dir=$(redis-cli "$@" CONFIG GET dir | sed -n 2p)
file=$(redis-cli "$@" CONFIG GET dbfilename | sed -n 2p)
target="$dest/dump-$(date -u +%Y%m%dT%H%M%SZ).rdb"
mkdir -p "$dest"
cp "$dir/$file" "$target.tmp"
redis-check-rdb "$target.tmp" >/dev/null
mv "$target.tmp" "$target"
echo "$target"
