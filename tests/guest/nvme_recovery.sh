#!/bin/sh
# The guest half of tests/test_vfio_user_guest_faults.py: Linux's nvme driver
# meets faults the server injects (its --fault rules), and must recover.
# Run as /test.sh by the busybox initramfs of `vfio-user-guest.sh initrd`.
#
# The server fires each rule once, on a 4 KiB read at a fixed offset:
#   dnr    8 MiB: completed with Unrecovered Read Error and Do Not Retry
#   delay 12 MiB: completion held far past io_timeout (not abortable)
#   cfs   16 MiB: CSTS.CFS, the command never completes
# This script sets the namespace's I/O timeout to 3 s (the queue's io_timeout:
# this kernel refuses to load nvme-core a second time, so nvme_core.io_timeout
# cannot be changed by reloading it), writes a random pattern at
# each offset, reads each offset back once (timed), then once more, and reports
#   CHECK key=value   (value to the end of the line)
#   DMESG text        (the driver's messages about the recovery)
#   FAIL reason       (a step that could not run)
# The host test judges. Every wait is bounded, so a dead device ends in FAIL.

DEV=/dev/nvme0n1
CTRL=/sys/class/nvme/nvme0
IO_TIMEOUT=3
DEADLINE=90

check() { echo "CHECK $1=$2"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
dmesg_report() {
  dmesg | grep -i -e nvme -e timeout -e abort -e reset -e 'medium error' -e 'I/O error' | tail -n 80 | sed 's/^/DMESG /'
}
fail() {
  echo "FAIL $*"
  dmesg_report
  exit 1
}
wait_for() { # wait_for PATH SECONDS
  n=0
  while [ ! -e "$1" ]; do
    n=$((n + 1))
    [ "$n" -gt $(($2 * 10)) ] && return 1
    sleep 0.1
  done
}
# bounded NAME CMD...: run CMD in the background with a deadline; its exit status
# in CHECK NAME_rc, its last stderr line in CHECK NAME_err, its wall time in NAME_seconds.
bounded() {
  local what=$1 t0 pid n
  shift
  t0=$(uptime_s)
  "$@" 2>/tmp/err &
  pid=$!
  n=0
  while kill -0 $pid 2>/dev/null; do
    n=$((n + 1))
    if [ $n -gt $((DEADLINE * 10)) ]; then
      check "${what}_state" "$(cat $CTRL/state)"
      fail "$what: no completion after $DEADLINE s"
    fi
    sleep 0.1
  done
  wait $pid
  check "${what}_rc" "$?"
  check "${what}_err" "$(tail -n 1 /tmp/err)"
  check "${what}_seconds" "$(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }')"
}

wait_for $DEV 90 || fail "no $DEV after 90 s"
# The driver's timeout handler runs when a request passes its queue's timeout.
echo $((IO_TIMEOUT * 1000)) > /sys/block/nvme0n1/queue/io_timeout || fail "cannot set the queue's io_timeout"
check io_timeout_ms "$(cat /sys/block/nvme0n1/queue/io_timeout)"
dd if=$DEV of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null || fail "dd has no iflag=direct"

CASES="dnr 8388608
delay 12582912
cfs 16777216"

while read -r name off; do
  head -c 4096 /dev/urandom > "/tmp/pat_$name"
  bounded "write_$name" dd if="/tmp/pat_$name" of=$DEV bs=4096 count=1 seek="$off" oflag=seek_bytes,direct conv=notrunc,fsync
  check "written_$name" "$(md5sum < "/tmp/pat_$name" | cut -d' ' -f1)"
done <<EOF
$CASES
EOF

while read -r name off; do
  dmesg -c > /dev/null
  rm -f /tmp/out
  bounded "$name" dd if=$DEV of=/tmp/out bs=4096 count=1 skip="$off" iflag=skip_bytes,direct
  check "${name}_md5" "$(md5sum < /tmp/out 2>/dev/null | cut -d' ' -f1)"
  dmesg_report | sed "s/^DMESG /DMESG $name: /"
  wait_for $DEV 30 || fail "no $DEV after the $name recovery"
  rm -f /tmp/out
  bounded "${name}_again" dd if=$DEV of=/tmp/out bs=4096 count=1 skip="$off" iflag=skip_bytes,direct
  check "${name}_again_md5" "$(md5sum < /tmp/out 2>/dev/null | cut -d' ' -f1)"
  check "${name}_state" "$(cat $CTRL/state)"
done <<EOF
$CASES
EOF
check done "$(uptime_s)"
