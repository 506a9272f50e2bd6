#!/bin/sh
# The guest half of tests/test_pi_guest.py: run as /test.sh by the initramfs that
# tests/guestbin.py builds (vfio-user-guest.sh's busybox initramfs, nvme and t10-pi
# modules loaded, plus Debian's nvme-cli and the files the host test made under /pi).
# The same script runs against QEMU's own NVMe with metadata and PI (the control)
# and against nvmefast.
#
# For every namespace /pi/nN/env describes (sourced: LBA size, metadata size, PI
# type, tuple size, the LBAs of each step, PRCHK bits as Linux sets them) it
# observes and reports; the host test judges. One console line per result:
#   CHECK key=value   (value runs to the end of the line; keys end in _nN)
#   KLOG key=line     (a kernel message logged during step `key`)
#   FAIL reason       (a step that could not run: the script lists dmesg and exits 1)
# Every nvme-cli result is reported as `RC STATUS` (exit code, and the NVMe status
# in hex as nvme-cli prints it, or `-`).

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
CTRL=/sys/class/nvme/nvme0
PATTERN=/pi/pattern.bin

check() { echo "CHECK $1=$2"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
dmesg_report() { dmesg | grep -i -e nvme -e integrity -e protection -e 'tag error' | tail -n 60 | sed 's/^/DMESG /'; }
fail() { echo "FAIL $*"; dmesg_report; exit 1; }
wait_for() { # wait_for PATH SECONDS
  n=0
  while [ ! -e "$1" ]; do
    n=$((n + 1)); [ "$n" -gt $(($2 * 10)) ] && return 1; sleep 0.1
  done
}
hex() { hexdump -v -e '/1 "%02x"' "$1"; }
md5() { md5sum < "$1" | cut -d' ' -f1; }
# nvme_rc KEY nvme-args...: run nvme-cli, report "RC STATUS" (status as printed, e.g. 0x4282)
nvme_rc() {
  key=$1; shift
  rm -f /tmp/md /tmp/data  # nvme-cli does not truncate its output files
  nvme "$@" > /tmp/nvme.out 2>&1
  rc=$?
  st=$(grep -o '(0x[0-9a-fA-F]*)' /tmp/nvme.out | tail -n 1 | tr -d '()')
  check "$key" "$rc ${st:--}"
  [ $rc -eq 0 ] || sed "s/^/LOG $key: /" /tmp/nvme.out | head -n 3
}
# blk_read KEY LBA: one block through the block layer (O_DIRECT), kernel messages kept
blk_read() {
  dmesg -c > /dev/null
  if dd if=$DEV of=/tmp/blk.out bs=$L count=1 skip=$2 iflag=direct 2> /tmp/dd.err; then
    check "$1" "0 $(md5 /tmp/blk.out)"
  else
    check "$1" "1 $(grep -v records /tmp/dd.err | head -n 1)"
  fi
  sleep 0.2  # the integrity verification and its log run on a workqueue
  dmesg | grep -e 'protection error' -e 'tag error' -e 'I/O Error' -e 'I/O error' | sed "s/^\[[ 0-9.]*\] //; s/^/KLOG $1=/"
}

mount -t tmpfs tmp /tmp 2>/dev/null
check uptime_start "$(uptime_s)"
[ -f $PATTERN ] || fail "no $PATTERN in the initramfs"
command -v nvme > /dev/null || fail "nvme-cli is not in the initramfs"
wait_for $CTRL 60 || fail "no $CTRL after 60 s (nvme driver did not bind)"
NS_LIST=$(ls /pi | grep '^n[0-9]*$' | sed 's/^n//' | sort -n)
LAST=$(echo "$NS_LIST" | tail -n 1)
wait_for /dev/nvme0n$LAST 90 || fail "no /dev/nvme0n$LAST after 90 s: $(ls /sys/block | tr '\n' ' ')"
check dev_at "$(uptime_s)"
check nvme_version "$(nvme version | head -n 1)"
check ctratt "$(nvme id-ctrl /dev/nvme0 | sed -n 's/^ctratt *: *//p')"

for N in $NS_LIST; do
  DEV=/dev/nvme0n$N
  BLK=/sys/block/nvme0n$N
  . /pi/n$N/env   # MODE EXT L MS T P PRCHK BLK_LBA PRACT_LBA HOSTPI_LBA BADGUARD_LBA BADREF_LBA FAULT_LBAS
  s=_n$N
  wait_for $DEV 30 || fail "no $DEV"

  # -- what Linux made of it ---------------------------------------------------------
  check "format$s" "$(cat $BLK/integrity/format)"
  check "tag_size$s" "$(cat $BLK/integrity/tag_size)"
  check "capable$s" "$(cat $BLK/integrity/device_is_integrity_capable)"
  check "interval$s" "$(cat $BLK/integrity/protection_interval_bytes)"
  check "verify_generate$s" "$(cat $BLK/integrity/read_verify) $(cat $BLK/integrity/write_generate)"
  check "lba_size$s" "$(cat $BLK/queue/logical_block_size)"
  check "size_sectors$s" "$(cat $BLK/size)"
  nvme id-ns $DEV > /tmp/idns 2>&1 || fail "nvme id-ns $DEV: $(cat /tmp/idns)"
  for f in nlbaf flbas mc dpc dps dlfeat; do
    check "id_$f$s" "$(sed -n "s/^$f *: *//p" /tmp/idns)"
  done
  check "id_inuse$s" "$(grep 'in use' /tmp/idns | sed 's/ *(in use)//; s/  */ /g')"
  check "nvm_inuse$s" "$(nvme nvm-id-ns $DEV 2>&1 | grep 'in use' | sed 's/ *(in use)//; s/  */ /g')"

  if [ "${MODE:-full}" = linux ]; then
    # What Linux makes of a format it cannot (PI last behind other metadata) or need not
    # (extended LBAs: it sends PRACT) give integrity buffers to: one direct write and read.
    if dd if=$PATTERN of=$DEV bs=$L count=2 seek=$BLK_LBA oflag=direct conv=notrunc 2> /tmp/dd.err &&
       dd if=$DEV of=/tmp/back bs=$L count=2 skip=$BLK_LBA iflag=direct 2>> /tmp/dd.err; then
      check "blk_rw$s" "0 $(md5 /tmp/back)"
    else
      check "blk_rw$s" "1 $(grep -v records /tmp/dd.err | head -n 1)"
    fi
    if [ "${EXT:-0}" = 1 ]; then  # extended LBAs: each block's metadata follows its data
      nvme_rc "ext_read$s" read $DEV -s $BLK_LBA -c 0 -z $((L + MS)) -d /tmp/data -p 0
      check "ext_md$s" "$(tail -c $MS /tmp/data | hexdump -v -e '/1 "%02x"')"
    fi
    continue
  fi

  # -- the block layer: Linux generates PI on writes and verifies it on reads -----------
  dd if=$PATTERN of=$DEV bs=65536 count=1 seek=$((BLK_LBA * L)) oflag=seek_bytes,direct conv=notrunc 2> /tmp/dd.err ||
    fail "O_DIRECT write at LBA $BLK_LBA: $(cat /tmp/dd.err)"
  dd if=$DEV of=/tmp/back bs=65536 count=1 skip=$((BLK_LBA * L)) iflag=skip_bytes,direct 2> /tmp/dd.err ||
    fail "O_DIRECT read at LBA $BLK_LBA: $(cat /tmp/dd.err)"
  check "blk_direct$s" "$(md5 /tmp/back)"
  # through the page cache, then from the device again
  dd if=$PATTERN of=$DEV bs=65536 count=1 seek=$(((BLK_LBA * L) + 65536)) oflag=seek_bytes conv=notrunc,fsync 2> /tmp/dd.err ||
    fail "buffered write: $(cat /tmp/dd.err)"
  sync; echo 3 > /proc/sys/vm/drop_caches
  dd if=$DEV of=/tmp/back bs=65536 count=1 skip=$(((BLK_LBA * L) + 65536)) iflag=skip_bytes 2> /tmp/dd.err ||
    fail "buffered read: $(cat /tmp/dd.err)"
  check "blk_buffered$s" "$(md5 /tmp/back)"
  # the PI the kernel generated, as stored: two blocks with their metadata, no checks
  nvme_rc "kernel_read$s" read $DEV -s $BLK_LBA -c 1 -z $((2 * L)) -y $((2 * MS)) -M /tmp/md -d /tmp/data -p 0
  check "kernel_md$s" "$(hex /tmp/md)"
  check "kernel_data$s" "$(md5 /tmp/data)"

  # -- PRACT: the controller inserts PI on the write and checks and strips it on the read --
  nvme_rc "pract_write$s" write $DEV -s $PRACT_LBA -c 1 -z $((2 * L)) -d $PATTERN -p $((8 | PRCHK)) -r $PRACT_LBA -a 0x1234
  nvme_rc "pract_read$s" read $DEV -s $PRACT_LBA -c 1 -z $((2 * L)) -d /tmp/data -p $((8 | PRCHK)) -r $PRACT_LBA
  check "pract_data$s" "$(md5 /tmp/data)"
  nvme_rc "pract_md_read$s" read $DEV -s $PRACT_LBA -c 1 -z $((2 * L)) -y $((2 * MS)) -M /tmp/md -d /tmp/data -p 0
  check "pract_md$s" "$(hex /tmp/md)"
  blk_read "pract_blk$s" $PRACT_LBA

  # -- PI from the host (PRACT 0), checked by the controller on the write ----------------
  nvme_rc "host_write$s" write $DEV -s $HOSTPI_LBA -c 0 -z $L -d $PATTERN -y $MS -M /pi/n$N/good.md \
    -p $((PRCHK | 2)) -r $HOSTPI_LBA -a 0x5678 -m 0xffff
  nvme_rc "host_read$s" read $DEV -s $HOSTPI_LBA -c 0 -z $L -y $MS -M /tmp/md -d /tmp/data \
    -p $((PRCHK | 2)) -r $HOSTPI_LBA -a 0x5678 -m 0xffff
  check "host_md$s" "$(hex /tmp/md)"
  nvme_rc "host_badapp$s" read $DEV -s $HOSTPI_LBA -c 0 -z $L -y $MS -M /tmp/md -d /tmp/data \
    -p 2 -a 0x5679 -m 0xffff
  nvme_rc "host_maskedapp$s" read $DEV -s $HOSTPI_LBA -c 0 -z $L -y $MS -M /tmp/md -d /tmp/data \
    -p 2 -a 0x5679 -m 0xfff0
  blk_read "host_blk$s" $HOSTPI_LBA

  # -- a bad guard: refused when checked, and caught when stored -----------------------------
  nvme_rc "badguard_write$s" write $DEV -s $BADGUARD_LBA -c 0 -z $L -d $PATTERN -y $MS -M /pi/n$N/badguard.md -p 4
  nvme_rc "badguard_store$s" write $DEV -s $BADGUARD_LBA -c 0 -z $L -d $PATTERN -y $MS -M /pi/n$N/badguard.md -p 0
  nvme_rc "badguard_read$s" read $DEV -s $BADGUARD_LBA -c 0 -z $L -y $MS -M /tmp/md -d /tmp/data -p 4
  nvme_rc "badguard_pract_read$s" read $DEV -s $BADGUARD_LBA -c 0 -z $L -d /tmp/data -p 12
  nvme_rc "badguard_unchecked$s" read $DEV -s $BADGUARD_LBA -c 0 -z $L -y $MS -M /tmp/md -d /tmp/data -p 0
  blk_read "badguard_blk$s" $BADGUARD_LBA

  # -- a wrong reference tag: in the command (ILBRT), and stored ------------------------------
  nvme_rc "badref_cmd$s" read $DEV -s $PRACT_LBA -c 0 -z $L -d /tmp/data -p 9 -r $((PRACT_LBA + 1))
  nvme_rc "badref_write$s" write $DEV -s $BADREF_LBA -c 0 -z $L -d $PATTERN -y $MS -M /pi/n$N/badref.md -p 1 -r $BADREF_LBA
  nvme_rc "badref_store$s" write $DEV -s $BADREF_LBA -c 0 -z $L -d $PATTERN -y $MS -M /pi/n$N/badref.md -p 0
  nvme_rc "badref_read$s" read $DEV -s $BADREF_LBA -c 0 -z $L -y $MS -M /tmp/md -d /tmp/data -p 1 -r $BADREF_LBA
  blk_read "badref_blk$s" $BADREF_LBA

  # -- fault rules (nvmefast): blocks written through the block layer, then read back ---------
  for F in $FAULT_LBAS; do
    dd if=$PATTERN of=$DEV bs=$L count=1 seek=$F oflag=direct conv=notrunc 2> /tmp/dd.err ||
      fail "O_DIRECT write at LBA $F: $(cat /tmp/dd.err)"
    blk_read "fault${F}$s" $F
  done
done
check uptime_end "$(uptime_s)"
