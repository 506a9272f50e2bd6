#!/bin/sh
# The guest half of tests/test_vfio_user_guest.py: run as /test.sh by the busybox
# initramfs that `vfio-user-guest.sh initrd` builds (nvme modules already insmod'ed;
# /proc, /sys and /dev mounted; the init prints `GUEST-EXIT <rc>` and powers off).
#
# It observes and reports; the host test judges. Every result is one console line
#   CHECK key=value        (value runs to the end of the line)
#   IRQ phase name count   (an nvme line of /proc/interrupts, counts summed over CPUs)
#   DMESG text             (the kernel's nvme/pci messages, for the report)
#   FAIL reason            (a step that could not run; the script then lists the
#                           PCI devices as `PCI ...` lines, the DMESG lines, and exits 1)
# and every wait is bounded, so a dead device ends in FAIL, not in a hung guest.
#
# The same script runs in every boot. Before writing, it reports the md5 of each
# pattern region as it finds it (`before_rN`): zeroes on a fresh namespace, the
# previous boot's pattern (`written_rN`) on a second boot against the same server.

DEV=/dev/nvme0n1
CTRL=/sys/class/nvme/nvme0
BLK=/sys/block/nvme0n1

check() { echo "CHECK $1=$2"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
dmesg_report() {
  dmesg | grep -i -e nvme -e vfio -e msi -e 'pci 0000:00:0' -e timeout -e 'Call Trace' | grep -v vgaarb |
    tail -n 60 | sed 's/^/DMESG /'
}
fail() {
  echo "FAIL $*"
  for d in /sys/bus/pci/devices/*; do
    echo "PCI ${d##*/} $(cat $d/vendor):$(cat $d/device) class $(cat $d/class) driver $(readlink $d/driver 2>/dev/null | sed 's,.*/,,')"
  done
  dmesg_report
  exit 1
}
# wait_for PATH SECONDS: poll in 0.1 s steps; 0 when PATH exists
wait_for() {
  local n=0 max=$(($2 * 10))
  while [ ! -e "$1" ]; do
    n=$((n + 1))
    [ "$n" -gt "$max" ] && return 1
    sleep 0.1
  done
  return 0
}
# io WHAT DD-ARGS...: dd with a deadline. A hung command ends in FAIL with the
# driver's view: IO_DEADLINE is past the driver's 30 s I/O timeout, so dmesg says
# whether the completion was there without its interrupt ("completion polled").
IO_DEADLINE=40
io() {
  local what=$1 pid n=0
  shift
  dd "$@" 2>/tmp/dd.err &
  pid=$!
  while kill -0 $pid 2>/dev/null; do
    n=$((n + 1))
    if [ $n -gt $((IO_DEADLINE * 10)) ]; then
      echo "CHECK stuck_inflight=$(cat $BLK/inflight)"
      irq_report stuck
      fail "$what: no completion after $IO_DEADLINE s"
    fi
    sleep 0.1
  done
  wait $pid || fail "$what failed: $(cat /tmp/dd.err)"
}
irq_report() { # irq_report PHASE: one IRQ line per nvme vector
  awk -v phase="$1" 'NR == 1 { ncpu = NF; next }
    /nvme/ { s = 0; for (i = 2; i <= ncpu + 1; i++) s += $i; print "IRQ " phase " " $NF " " s }' /proc/interrupts
}
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

check uptime_start "$(uptime_s)"
check ncpu "$(nproc)"
check kernel "$(uname -r)"

wait_for $CTRL 60 || fail "no $CTRL after 60 s (nvme driver did not bind)"
check ctrl_bound_at "$(uptime_s)"
wait_for $DEV 90 || fail "no $DEV after 90 s (controller state: $(cat $CTRL/state 2>/dev/null))"
check dev_at "$(uptime_s)"

check state "$(cat $CTRL/state)"
check transport "$(cat $CTRL/transport 2>/dev/null)"
check model "$(cat $CTRL/model)"
check serial "$(cat $CTRL/serial)"
check firmware_rev "$(cat $CTRL/firmware_rev 2>/dev/null)"
check size_sectors "$(cat $BLK/size)"
check lba_size "$(cat $BLK/queue/logical_block_size)"
check max_hw_sectors_kb "$(cat $BLK/queue/max_hw_sectors_kb)"
check discard_max_bytes "$(cat $BLK/queue/discard_max_bytes 2>/dev/null || echo 0)"
check write_cache "$(cat $BLK/queue/write_cache 2>/dev/null)"
check mq_count "$(ls $BLK/mq | wc -l)"
check queues_msg "$(dmesg | grep -o '[0-9]*/[0-9]*/[0-9]* default/read/poll queues' | tail -n 1)"
irq_report before

# O_DIRECT if this dd has it (busybox >= 1.33 does), else page cache + sync + drop_caches.
if dd if=$DEV of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null; then
  DIRECT=direct
  check direct yes
else
  DIRECT=
  check direct no
fi
oflag=seek_bytes${DIRECT:+,$DIRECT}
iflag=skip_bytes${DIRECT:+,$DIRECT}

# Pattern regions "name offset size": LBA 0, an odd 4 KiB-aligned offset, a 1 MiB
# transfer (PRP lists; split by MDTS), and the last 128 KiB of the namespace.
bytes=$(($(cat $BLK/size) * 512))
REGIONS="r0 0 4096
r1 1056768 65536
r2 25169920 1048576
r3 $((bytes - 131072)) 131072"

read_region() { # read_region OFFSET SIZE OUT
  io "read of $2 bytes at $1" if=$DEV of="$3" bs="$2" count=1 skip="$1" iflag=$iflag
}

# (The loops read here-documents, so they run in this shell and `fail` exits it.)
drop_caches
while read -r name off size; do
  check "region_$name" "$off $size"
  read_region "$off" "$size" /tmp/before
  check "before_$name" "$(md5sum < /tmp/before | cut -d' ' -f1)"
done <<EOF
$REGIONS
EOF

while read -r name off size; do
  head -c "$size" /dev/urandom > "/tmp/pat_$name"
  io "write of $size bytes at $off" if="/tmp/pat_$name" of=$DEV bs="$size" count=1 seek="$off" oflag=$oflag conv=notrunc,fsync
  check "written_$name" "$(md5sum < "/tmp/pat_$name" | cut -d' ' -f1)"
done <<EOF
$REGIONS
EOF
# Every write above ended in fsync, so in a Flush the device completed: a host
# test may kill the server the moment it sees this line, and a new server on
# the same image must still serve the patterns.
check flushed_at "$(uptime_s)"

drop_caches
while read -r name off size; do
  read_region "$off" "$size" /tmp/back
  check "readback_$name" "$(md5sum < /tmp/back | cut -d' ' -f1)"
  if cmp -s "/tmp/pat_$name" /tmp/back; then check "cmp_$name" ok; else check "cmp_$name" differ; fi
done <<EOF
$REGIONS
EOF

# More I/O, from each CPU in turn, so every I/O queue's vector has to fire.
for cpu in $(seq 0 $(($(nproc) - 1))); do
  taskset -p -c "$cpu" $$ >/dev/null
  io "8 MiB read on cpu $cpu" if=$DEV of=/dev/null bs=65536 count=128 iflag=$iflag
done
taskset -p -c "0-$(($(nproc) - 1))" $$ >/dev/null
check io_done_at "$(uptime_s)"

# Deallocate (Dataset Management) where the device offers it: the range reads back as zeroes.
if [ "$(cat $BLK/queue/discard_max_bytes 2>/dev/null || echo 0)" != 0 ]; then
  off=$((bytes / 2)) size=65536
  io "write of $size bytes at $off" if=/dev/urandom of=$DEV bs=$size count=1 seek=$off oflag=$oflag conv=notrunc,fsync
  if blkdiscard -o $off -l $size $DEV 2>/tmp/dd.err; then
    drop_caches
    read_region $off $size /tmp/back
    if head -c $size /dev/zero | cmp -s - /tmp/back; then check discard ok; else check discard not-zero; fi
  else
    check discard "failed: $(cat /tmp/dd.err)"
  fi
fi

irq_report after
check timeouts "$(dmesg | grep -i nvme | grep -c -i -e timeout -e 'completion polled')"
check state_end "$(cat $CTRL/state)"
dmesg_report
check uptime_end "$(uptime_s)"
exit 0
