#!/bin/sh
# The guest half of tests/test_zns_guest.py: run as /test.sh by the initramfs that
# tests/guestbin.py builds (vfio-user-guest.sh's busybox initramfs, nvme modules
# loaded, plus Debian's blkzone, nvme-cli and fio at their own paths). The same script runs against
# QEMU's own ZNS (-device nvme-ns,zoned=true: the control) and against nvmefast.
#
# It observes and reports; the host test judges. Every result is one console line
#   CHECK key=value   (value runs to the end of the line)
#   FAIL reason       (a step that could not run: the script lists dmesg and exits 1)
#   DMESG text / LOG text  (for the report)
# Everything it needs comes from sysfs (zone size, limits), so the host test
# decides what the device should look like and checks the values here against it.
#
# Zones used (the device needs >= 16): 1-2 writes and appends, 3-4 zone management,
# 0.. for the open/active limits, 8-11 fio sequential with verify, 12-15 fio random,
# and with zns.fault_zone=N on the kernel command line zone N for a zone fault (nvmefast only).

# The Debian binaries sit at their own paths; busybox's applets in /bin.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

DEV=/dev/nvme0n1
CTRL=/sys/class/nvme/nvme0
BLK=/sys/block/nvme0n1

check() { echo "CHECK $1=$2"; }
log() { sed 's/^/LOG /'; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
dmesg_report() { dmesg | grep -i -e nvme -e zone -e 'I/O' -e timeout | tail -n 60 | sed 's/^/DMESG /'; }
fail() { echo "FAIL $*"; dmesg_report; exit 1; }
wait_for() { # wait_for PATH SECONDS
  n=0
  while [ ! -e "$1" ]; do
    n=$((n + 1)); [ "$n" -gt $(($2 * 10)) ] && return 1; sleep 0.1
  done
}

check uptime_start "$(uptime_s)"
wait_for $CTRL 60 || fail "no $CTRL after 60 s (nvme driver did not bind)"
wait_for $DEV 90 || { dmesg_report; fail "no $DEV after 90 s (controller state: $(cat $CTRL/state 2>/dev/null))"; }
check dev_at "$(uptime_s)"
for t in blkzone nvme fio; do
  command -v $t >/dev/null || fail "$t is not in the initramfs"
done
check nvme_version "$(nvme version | head -n 1)"
check fio_version "$(fio --version)"

# -- what Linux made of the namespace -------------------------------------------------
check state "$(cat $CTRL/state)"
check zoned "$(cat $BLK/queue/zoned)"
check chunk_sectors "$(cat $BLK/queue/chunk_sectors)"
check nr_zones "$(cat $BLK/queue/nr_zones 2>/dev/null)"
check max_open_zones "$(cat $BLK/queue/max_open_zones 2>/dev/null)"
check max_active_zones "$(cat $BLK/queue/max_active_zones 2>/dev/null)"
check zone_append_max_bytes "$(cat $BLK/queue/zone_append_max_bytes 2>/dev/null)"
check lba_size "$(cat $BLK/queue/logical_block_size)"
check size_sectors "$(cat $BLK/size)"
check ro "$(cat $BLK/ro)"
[ "$(cat $BLK/queue/zoned)" = host-managed ] || fail "not a host-managed zoned disk: $(cat $BLK/queue/zoned)"

ZS=$(cat $BLK/queue/chunk_sectors)          # zone size, 512-byte sectors
ZB=$((ZS * 512))                            # zone size, bytes
LBA=$(cat $BLK/queue/logical_block_size)
LPS=$((LBA / 512))                          # sectors per LBA
MO=$(cat $BLK/queue/max_open_zones)
MA=$(cat $BLK/queue/max_active_zones)
NZ=$(cat $BLK/queue/nr_zones)
[ "$NZ" -ge 16 ] || fail "the script needs >= 16 zones, the device has $NZ"
zslba() { echo $(($1 * ZS / LPS)); }        # zslba ZONE: the zone's first LBA

# The zoned-capable scheduler keeps writes to a zone in order at queue depth > 1.
echo mq-deadline > $BLK/queue/scheduler 2>/dev/null
check scheduler "$(cat $BLK/queue/scheduler)"

# -- identify through nvme-cli's zns plugin ----------------------------------------------
nvme zns id-ctrl $DEV > /tmp/idctrl 2>&1; check zns_id_ctrl_rc $?
check zasl "$(awk '/^zasl/ {print $3}' /tmp/idctrl)"
nvme zns id-ns $DEV > /tmp/idns 2>&1; check zns_id_ns_rc $?
log < /tmp/idns
check zoc "$(awk '/^zoc/ {print $3}' /tmp/idns)"
check mor "$(awk '/^mor/ {print $3}' /tmp/idns)"
check mar "$(awk '/^mar/ {print $3}' /tmp/idns)"
check zsze "$(awk '/in use/ {print $3}' /tmp/idns)"

# -- blkzone report --------------------------------------------------------------------------
# A line: "  start: 0x000004000, len 0x004000, cap 0x003000, wptr 0x000000 reset:0 non-seq:0, zcond: 1(em) [type: 2(...)]"
blkzone report $DEV > /tmp/report 2>&1 || fail "blkzone report: $(cat /tmp/report)"
check report_zones "$(grep -c 'start:' /tmp/report)"
check report_empty "$(grep -c '(em)' /tmp/report)"
check report_types "$(grep -o 'type: [0-9]*([A-Z_]*)' /tmp/report | sort -u | tr '\n' ' ')"
check zone0_cap "$(head -n 1 /tmp/report | sed -n 's/.*cap \(0x[0-9a-f]*\).*/\1/p')"
check zone0_len "$(head -n 1 /tmp/report | sed -n 's/.*len \(0x[0-9a-f]*\).*/\1/p')"
check report_last_start "$(tail -n 1 /tmp/report | sed -n 's/.*start: \(0x[0-9a-f]*\).*/\1/p')"
ZCAP=$(($(head -n 1 /tmp/report | sed -n 's/.*cap \(0x[0-9a-f]*\).*/\1/p')))   # sectors

zone() { # zone N: "WPTR COND" of zone N (wptr relative to the zone start, in sectors)
  blkzone report -o $(($1 * ZS)) -c 1 $DEV |
    sed -n 's/.*wptr \(0x[0-9a-f]*\).*zcond: *[0-9]*(\([a-z]*\)).*/\1 \2/p; s/.*wptr N\/A.*zcond: *[0-9]*(\([a-z]*\)).*/N\/A \1/p'
}
conds() { blkzone report $DEV | sed -n 's/.*zcond: *[0-9]*(\([a-z]*\)).*/\1/p' | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}'; }

# -- writes at and off the write pointer (zone 1) ---------------------------------------
head -c 131072 /dev/urandom > /tmp/pat
Z1=$((1 * ZB))
dd if=/tmp/pat of=$DEV bs=65536 count=1 seek=$Z1 oflag=seek_bytes,direct 2>/tmp/err
check write_at_wp_rc $?
check zone1_after_write "$(zone 1)"
dd if=/tmp/pat of=$DEV bs=65536 count=1 skip=1 seek=$((Z1 + 65536)) oflag=seek_bytes,direct 2>/tmp/err
check write_at_wp2_rc $?
check zone1_after_write2 "$(zone 1)"
dmesg -c > /dev/null
dd if=/tmp/pat of=$DEV bs=4096 count=1 seek=$((Z1 + 1048576)) oflag=seek_bytes,direct 2>/tmp/err
check write_above_wp_rc $?
check write_above_wp_err "$(head -n 1 /tmp/err)"
dd if=/tmp/pat of=$DEV bs=4096 count=1 seek=$Z1 oflag=seek_bytes,direct 2>/tmp/err
check write_below_wp_rc $?
check write_off_wp_dmesg "$(dmesg | grep -o 'sct 0x[0-9a-f]* / sc 0x[0-9a-f]*)[ A-Z]*' | sort -u | tr '\n' ';')"
check write_off_wp_retries "$(dmesg | grep -c 'I/O Error')"
check zone1_after_bad_writes "$(zone 1)"
dd if=$DEV of=/tmp/back bs=131072 count=1 skip=$Z1 iflag=skip_bytes,direct 2>/dev/null
check zone1_readback "$(cmp -s /tmp/pat /tmp/back && echo same || echo differ)"
# Above the write pointer: deallocated, reads as zeroes (DLFEAT 001b).
dd if=$DEV of=/tmp/back bs=65536 count=1 skip=$((Z1 + 1048576)) iflag=skip_bytes,direct 2>/dev/null
check zone1_above_wp_zero "$(head -c 65536 /dev/zero | cmp -s - /tmp/back && echo yes || echo no)"

# -- zone append through nvme-cli (zone 2) ------------------------------------------------------
# nvme-cli prints the assigned LBA in hex ("...to LBA 1008"; newer ones "0x1008").
alba() { echo $((0x$(sed -n 's/.*LBA \(0x\)\{0,1\}\([0-9a-fA-F]*\).*/\2/p' "$1"))); }
S2=$(zslba 2)
check zone2_zslba "$S2"
head -c 8192 /dev/urandom > /tmp/a1
head -c 8192 /dev/urandom > /tmp/a2
nvme zns zone-append $DEV -s $S2 -z 8192 -d /tmp/a1 > /tmp/out 2>&1; check append1_rc $?
check append1_out "$(cat /tmp/out)"
check append1_lba "$(alba /tmp/out)"
nvme zns zone-append $DEV -s $S2 -z 8192 -d /tmp/a2 > /tmp/out 2>&1; check append2_rc $?
check append2_out "$(cat /tmp/out)"
check append2_lba "$(alba /tmp/out)"
check zone2_after_appends "$(zone 2)"
for n in 1 2; do
  nvme zns zone-append $DEV -s $S2 -z 8192 -d /tmp/a$n > /dev/null 2>&1 || true
done
nvme zns zone-append $DEV -s $S2 -z 8192 -d /tmp/a1 > /tmp/out 2>&1
A=$(alba /tmp/out)
check append5_lba "$A"
dd if=$DEV of=/tmp/back bs=8192 count=1 skip=$((A * LBA)) iflag=skip_bytes,direct 2>/dev/null
check append5_readback "$(cmp -s /tmp/a1 /tmp/back && echo same || echo differ)"
# Not a zone start: Invalid Field in Command.
nvme zns zone-append $DEV -s $((S2 + 1)) -z 8192 -d /tmp/a1 > /tmp/out 2>&1; check append_not_zslba_rc $?
check append_not_zslba_out "$(tr '\n' ' ' < /tmp/out)"
# More than the zone append size limit.
ZAM=$(cat $BLK/queue/zone_append_max_bytes)
head -c $((ZAM * 2)) /dev/urandom > /tmp/big
nvme zns zone-append $DEV -s $S2 -z $((ZAM * 2)) -d /tmp/big > /tmp/out 2>&1; check append_over_zasl_rc $?
check append_over_zasl_out "$(tr '\n' ' ' < /tmp/out)"
check zone2_end "$(zone 2)"

# -- zone management: blkzone on zone 3, nvme-cli on zone 4 ------------------------------------
R3="-o $((3 * ZS)) -c 1"
blkzone open $R3 $DEV; check bz_open_rc $?;     check bz_open "$(zone 3)"
blkzone close $R3 $DEV; check bz_close_rc $?;   check bz_close "$(zone 3)"
blkzone finish $R3 $DEV; check bz_finish_rc $?; check bz_finish "$(zone 3)"
blkzone reset $R3 $DEV; check bz_reset_rc $?;   check bz_reset "$(zone 3)"
S4=$(zslba 4)
nvme zns open-zone $DEV -s $S4 > /dev/null 2>&1; check nv_open_rc $?;     check nv_open "$(zone 4)"
nvme zns close-zone $DEV -s $S4 > /dev/null 2>&1; check nv_close_rc $?;   check nv_close "$(zone 4)"
nvme zns finish-zone $DEV -s $S4 > /dev/null 2>&1; check nv_finish_rc $?; check nv_finish "$(zone 4)"
nvme zns reset-zone $DEV -s $S4 > /dev/null 2>&1; check nv_reset_rc $?;   check nv_reset "$(zone 4)"
# Invalid transitions: close an Empty zone, open a Full one.
nvme zns close-zone $DEV -s $S4 > /tmp/out 2>&1; check nv_close_empty_rc $?
check nv_close_empty_out "$(tr '\n' ' ' < /tmp/out)"
nvme zns report-zones $DEV -d 5 > /tmp/out 2>&1; check nv_report_rc $?
log < /tmp/out
# Select All: close every open zone (1 and 2), finish every closed one, reset all.
check before_select_all "$(conds)"
nvme zns close-zone $DEV -a > /dev/null 2>&1; check nv_close_all_rc $?; check after_close_all "$(conds)"
nvme zns finish-zone $DEV -a > /dev/null 2>&1; check nv_finish_all_rc $?; check after_finish_all "$(conds)"
blkzone reset $DEV; check bz_reset_all_rc $?; check after_reset_all "$(conds)"

# -- resource limits: max open, then max active ------------------------------------------------
if [ "$MO" -gt 0 ]; then
  blkzone open -o 0 -c $((MO + 1)) $DEV 2>/tmp/err; check open_over_limit_rc $?
  check open_over_limit_err "$(tail -n 1 /tmp/err)"
  check open_over_limit "$(conds)"
  if [ "$MA" -gt "$MO" ]; then
    nvme zns close-zone $DEV -a > /dev/null 2>&1
    blkzone open -o $((MO * ZS)) -c $((MA - MO)) $DEV 2>/tmp/err; check open_to_active_limit_rc $?
    blkzone open -o $((MA * ZS)) -c 1 $DEV 2>/tmp/err; check open_over_active_rc $?
    check open_over_active_err "$(tail -n 1 /tmp/err)"
    check open_over_active "$(conds)"
  fi
  blkzone reset $DEV; check limits_reset_rc $?
fi

# -- fio: sequential writes with verify over 4 zones, random writes over 4 more --------------------
dmesg -c > /dev/null
fio --name=zseq --filename=$DEV --direct=1 --zonemode=zbd --rw=write --bs=64k --ioengine=libaio \
    --iodepth=4 --offset=$((8 * ZB)) --size=$((4 * ZB)) --verify=crc32c > /tmp/fio 2>&1
check fio_seq_rc $?
check fio_seq_err "$(grep -o 'err= *[0-9]*' /tmp/fio | head -n 1)"
check fio_seq_verify_errors "$(grep -c -i 'verify.*bad\|bad.*verify' /tmp/fio)"
check fio_seq_written "$(grep -o 'WRITE: bw=[^,]*, [^,]*, io=[^ ]*' /tmp/fio)"
log < /tmp/fio
n=0; for z in 8 9 10 11; do [ "$(zone $z | cut -d' ' -f2)" = fu ] && n=$((n + 1)); done
check fio_seq_full_zones $n
fio --name=zrand --filename=$DEV --direct=1 --zonemode=zbd --rw=randwrite --bs=16k --ioengine=libaio \
    --iodepth=4 --offset=$((12 * ZB)) --size=$((4 * ZB)) --io_size=$((2 * ZCAP * 512)) \
    --max_open_zones=2 --verify=crc32c > /tmp/fio 2>&1
check fio_rand_rc $?
check fio_rand_err "$(grep -o 'err= *[0-9]*' /tmp/fio | head -n 1)"
check fio_rand_written "$(grep -o 'WRITE: bw=[^,]*, [^,]*, io=[^ ]*' /tmp/fio)"
log < /tmp/fio
check fio_rand_zones "$(blkzone report -o $((12 * ZS)) -c 4 $DEV | sed -n 's/.*zcond: *[0-9]*(\([a-z]*\)).*/\1/p' | tr '\n' ' ')"
check fio_io_errors "$(dmesg | grep -c 'I/O Error')"

check after_fio "$(conds)"
blkzone reset $DEV; check final_reset_rc $?
check final "$(conds)"
# -- a zone the controller takes away (nvmefast's fault injection; the host test passes
#    zns.fault_zone=N on the kernel command line and a rule making zone N Read Only on a write) --
FZ=
for kv in $(cat /proc/cmdline); do case "$kv" in zns.fault_zone=*) FZ=${kv#*=};; esac; done
if [ -n "$FZ" ]; then
  # Linux enables only the notices it handles; add Zone Descriptor Changed (AEC bit 27).
  aec=$(nvme get-feature /dev/nvme0 -f 0x0b 2>/dev/null | sed -n 's/.*Current value: *\(0x[0-9a-fA-F]*\).*/\1/p')
  nvme set-feature /dev/nvme0 -f 0x0b -v $(( ${aec:-0} | 1 << 27 )) > /dev/null 2>&1; check fault_aec_rc $?
  dmesg -c > /dev/null
  dd if=/tmp/pat of=$DEV bs=4096 count=1 seek=$((FZ * ZB)) oflag=seek_bytes,direct 2>/dev/null
  check fault_write_rc $?
  check fault_zone_cond "$(zone $FZ | cut -d' ' -f2)"
  i=0; while ! dmesg | grep -q 'async event result' && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  check fault_dmesg "$(dmesg | grep -o -e 'sc 0x[0-9a-f]*' -e 'async event result [0-9a-f]*' | sort -u | tr '\n' ';')"
  nvme zns changed-zone-list $DEV > /tmp/out 2>&1; check fault_changed_rc $?
  # nvme-cli 2.3 prints each ZSLBA in decimal ("zid 000: 14336"), others in hex.
  check fault_changed_has_zone "$(grep -c -i -w -e "$(zslba $FZ)" -e "$(printf '0x%x' $(zslba $FZ))" /tmp/out)"
  log < /tmp/out
  blkzone reset -o $((FZ * ZS)) -c 1 $DEV 2>/dev/null; check fault_reset_rc $?
  nvme zns offline-zone $DEV -s $(zslba $FZ) > /dev/null 2>&1; check fault_offline_rc $?
  check fault_zone_after_offline "$(zone $FZ | cut -d' ' -f2)"
  dd if=$DEV of=/dev/null bs=4096 count=1 skip=$((FZ * ZB)) iflag=skip_bytes,direct 2>/dev/null
  check fault_read_offline_rc $?
fi
check timeouts "$(dmesg | grep -i nvme | grep -c -i -e timeout -e 'completion polled')"
check state_end "$(cat $CTRL/state)"
dmesg_report
check uptime_end "$(uptime_s)"
exit 0
