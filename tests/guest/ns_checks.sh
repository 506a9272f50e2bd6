#!/bin/sh
# The guest half of tests/test_ns_guest.py: run as /test.sh by the initramfs that
# tests/guestbin.py builds (vfio-user-guest.sh's busybox initramfs with the nvme
# modules, plus Debian's nvme-cli).
#
# The kernel command line says what to run: ns.mode=qemu (QEMU's own NVMe with a
# second namespace made with detached=on, the control: attach and detach only, QEMU
# has no Namespace Management) or ns.mode=nvmefast (everything: create, attach,
# rescan, detach, delete, capacity, write-uncor, device self-test, sanitize, and
# namespaces the host adds and resizes while the guest runs). ns.nsze=N is the size
# of the namespace to create in 4 KiB blocks, ns.big=N one that cannot fit.
#
# It observes and reports; the host test judges. One console line per result:
#   CHECK key=value   (value runs to the end of the line)
#   HOST-STEP name    (the host test acts, e.g. adds a namespace; the guest then waits for the effect)
#   FAIL reason       (a step that could not run: the script lists dmesg and exits 1)
# nvme-cli results are reported as `RC STATUS` (exit code, then the NVMe status in hex
# as nvme-cli prints it, DNR included, or `-`).

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
CTRL=/dev/nvme0

check() { echo "CHECK $1=$2"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
dmesg_report() { dmesg | grep -i -e nvme -e 'I/O error' -e medium | tail -n 60 | sed 's/^/DMESG /'; }
fail() { echo "FAIL $*"; dmesg_report; exit 1; }
arg() { sed -n "s/.*ns\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
md5() { md5sum < "$1" | cut -d' ' -f1; }
wait_for() { # wait_for PATH SECONDS: 0 once it exists
  n=0
  while [ ! -e "$1" ]; do
    n=$((n + 1)); [ "$n" -gt $(($2 * 10)) ] && return 1; sleep 0.1
  done
}
wait_gone() { # wait_gone PATH SECONDS: 0 once it is gone
  n=0
  while [ -e "$1" ]; do
    n=$((n + 1)); [ "$n" -gt $(($2 * 10)) ] && return 1; sleep 0.1
  done
}
# nvme_rc KEY nvme-args...: run nvme-cli, report "RC STATUS"; its output stays in /tmp/nvme.out
nvme_rc() {
  key=$1; shift
  nvme "$@" > /tmp/nvme.out 2>&1
  rc=$?
  st=$(grep -o '(0x[0-9a-fA-F]*)' /tmp/nvme.out | tail -n 1 | tr -d '()')
  check "$key" "$rc ${st:--}"
  [ $rc -eq 0 ] || sed "s/^/LOG $key: /" /tmp/nvme.out | head -n 3
}
idctrl() { nvme id-ctrl $CTRL 2> /dev/null | sed -n "s/^$1 *: *//p"; }
# allocated / active NSIDs as nvme-cli lists them ("[   0]:0x1" lines), comma separated
nslist() { nvme list-ns $CTRL "$@" 2> /dev/null | sed -n 's/.*\]:0x\([0-9a-f]*\)/\1/p' | tr '\n' ',' ; }
blocks() { ls /sys/block | grep '^nvme0n' | sort | tr '\n' ' '; }
# rw_check KEY DEV: write 1 MiB of a pattern at 1 MiB (O_DIRECT), read it back
rw_check() {
  dd if=/tmp/pattern of=$2 bs=1M count=1 seek=1 oflag=direct conv=notrunc 2> /tmp/dd.err &&
    dd if=$2 of=/tmp/back bs=1M count=1 skip=1 iflag=direct 2>> /tmp/dd.err
  check "$1" "$? $(md5 /tmp/back)"
}
read_back() { # read_back KEY DEV: the 1 MiB at 1 MiB again
  dd if=$2 of=/tmp/back bs=1M count=1 skip=1 iflag=direct 2> /tmp/dd.err
  check "$1" "$? $(md5 /tmp/back)"
}

mount -t tmpfs tmp /tmp 2> /dev/null
check uptime_start "$(uptime_s)"
MODE=$(arg mode)
command -v nvme > /dev/null || fail "nvme-cli is not in the initramfs"
wait_for /sys/class/nvme/nvme0 60 || fail "no nvme0 after 60 s (the driver did not bind)"
wait_for /dev/nvme0n1 90 || fail "no /dev/nvme0n1 after 90 s: $(blocks)"
check dev_at "$(uptime_s)"
check mode "$MODE"
check nvme_version "$(nvme version | head -n 1)"
dd if=/dev/urandom of=/tmp/pattern bs=1M count=1 2> /dev/null
check pattern "$(md5 /tmp/pattern)"
dmesg -c > /dev/null

# -- what the controller says ---------------------------------------------------------
CNTLID=$(idctrl cntlid)
check cntlid "$CNTLID"
check oacs "$(idctrl oacs)"
check nn "$(idctrl nn)"
check mnan "$(idctrl mnan)"
check tnvmcap "$(idctrl tnvmcap)"
UNV0=$(idctrl unvmcap)
check unvmcap "$UNV0"
check active_before "$(nslist)"
check allocated_before "$(nslist -a)"
check blocks_before "$(blocks)"

# -- attach and detach a namespace that exists but is not attached ----------------------
if [ "$MODE" = qemu ]; then
  NEW=2   # QEMU: -device nvme-ns,nsid=2,detached=on
else
  # nvmefast: create it. -b 4096 makes nvme-cli read Identify Namespace FFFFFFFFh for the format.
  NSZE=$(arg nsze)
  nvme_rc create create-ns $CTRL -s $NSZE -c $NSZE -b 4096
  check create_out "$(head -n 1 /tmp/nvme.out)"
  NEW=$(sed -n 's/.*created nsid:\([0-9]*\).*/\1/p' /tmp/nvme.out)
  check unvmcap_created "$(idctrl unvmcap)"
  check allocated_created "$(nslist -a)"
  check active_created "$(nslist)"
  nvme id-ns $CTRL -n $NEW --force > /tmp/idns 2>&1
  check created_nsze "$(sed -n 's/^nsze *: *//p' /tmp/idns)"
  check created_flbas "$(sed -n 's/^flbas *: *//p' /tmp/idns)"
  check created_blocks "$(blocks)"
fi
[ -n "$NEW" ] || fail "no NSID to attach: $(cat /tmp/nvme.out)"
check new_nsid "$NEW"
check ctrls_detached "$(nvme list-ctrl $CTRL -n $NEW 2>&1 | head -n 1)"
DEV=/dev/nvme0n$NEW
nvme_rc attach_no_ctrl attach-ns $CTRL -n $NEW              # 2.3 sends an empty list
nvme_rc attach_other_ctrl attach-ns $CTRL -n $NEW -c 7      # no controller 7
nvme_rc attach attach-ns $CTRL -n $NEW -c $CNTLID
# The effects log marks Namespace Attachment NIC: Linux rescans by itself.
wait_for $DEV 30; check attach_dev "$?"
nvme_rc rescan ns-rescan $CTRL
wait_for $DEV 30; check rescan_dev "$?"
check attached_blocks "$(blocks)"
check active_attached "$(nslist)"
check ctrls_attached "$(nvme list-ctrl $CTRL -n $NEW 2>&1 | tr '\n' ' ')"
check new_size "$(cat /sys/block/nvme0n$NEW/size 2> /dev/null)"
check new_lba "$(cat /sys/block/nvme0n$NEW/queue/logical_block_size 2> /dev/null)"
rw_check new_rw $DEV
nvme_rc attach_again attach-ns $CTRL -n $NEW -c $CNTLID
nvme_rc detach detach-ns $CTRL -n $NEW -c $CNTLID
wait_gone $DEV 30; check detach_gone "$?"
check detached_blocks "$(blocks)"
nvme_rc detach_again detach-ns $CTRL -n $NEW -c $CNTLID
nvme_rc reattach attach-ns $CTRL -n $NEW -c $CNTLID
wait_for $DEV 30; check reattach_dev "$?"
read_back reattach_data $DEV

if [ "$MODE" = qemu ]; then
  nvme_rc final_detach detach-ns $CTRL -n $NEW -c $CNTLID
  wait_gone $DEV 30; check final_gone "$?"
  check uptime_end "$(uptime_s)"
  exit 0
fi

# -- delete (attached: it is detached first), and the capacity comes back --------------
nvme_rc delete delete-ns $CTRL -n $NEW
wait_gone $DEV 30; check delete_gone "$?"
check unvmcap_deleted "$(idctrl unvmcap)"
check allocated_deleted "$(nslist -a)"
nvme_rc delete_again delete-ns $CTRL -n $NEW
nvme_rc create_big create-ns $CTRL -s $(arg big) -c $(arg big) -f 1
nvme_rc create_thin create-ns $CTRL -s $NSZE -c 1 -f 1
check unvmcap_end "$(idctrl unvmcap)"

# -- Write Uncorrectable on namespace 1: reads fail until the blocks are written -------
U=4096   # LBA (512-byte blocks): 2 MiB in
nvme_rc uncor write-uncor /dev/nvme0n1 -n 1 -s $U -c 7
dmesg -c > /dev/null
dd if=/dev/nvme0n1 of=/tmp/blk bs=512 count=1 skip=$U iflag=direct 2> /tmp/dd.err
check uncor_read "$? $(grep -v records /tmp/dd.err | head -n 1)"
check uncor_dmesg "$(dmesg | grep -o -e 'sct 0x2 / sc 0x81' -e 'critical medium error' | sort -u | tr '\n' ';')"
dd if=/tmp/pattern of=/dev/nvme0n1 bs=512 count=8 seek=$U oflag=direct conv=notrunc 2> /tmp/dd.err
check uncor_write "$?"
dd if=/dev/nvme0n1 of=/tmp/blk bs=512 count=8 skip=$U iflag=direct 2> /tmp/dd.err
check uncor_reread "$? $(md5 /tmp/blk)"
check uncor_expect "$(head -c 4096 /tmp/pattern | md5sum | cut -d' ' -f1)"

# -- Device Self-test: a short test of every namespace, then its log ---------------------
nvme_rc dst device-self-test $CTRL -s 1
check dst_out "$(head -n 1 /tmp/nvme.out)"
seen=0; n=0
while [ $n -lt 60 ]; do
  nvme get-log $CTRL --log-id=6 --log-len=564 -b > /tmp/dst.bin 2> /dev/null
  op=$(head -c 1 /tmp/dst.bin | hexdump -v -e '/1 "%u"')
  [ "$op" = 0 ] && break
  seen=$((seen + 1)); n=$((n + 1)); sleep 1
done
check dst_polls_running "$seen"
check dst_log_hex "$(head -c 64 /tmp/dst.bin | hexdump -v -e '/1 "%02x"')"
nvme_rc dst_log self-test-log $CTRL
check dst_log_current "$(sed -n 's/^Current operation *: *//p' /tmp/nvme.out)"
check dst_log_result0 "$(sed -n '/Self Test Result\[0\]/,/Self Test Result\[1\]/p' /tmp/nvme.out | sed -n 's/^ *Operation Result *: *//p')"

# -- Sanitize (block erase): the log shows it run, then namespace 1 reads zeroes --------
nvme_rc sanitize sanitize $CTRL -a 2
n=0; sstat=
while [ $n -lt 120 ]; do
  nvme_rc sanitize_log sanitize-log $CTRL
  sstat=$(sed -n 's/^Sanitize Status *(SSTAT) *: *//p' /tmp/nvme.out)
  [ "$sstat" = 0x2 ] || break
  n=$((n + 1)); sleep 0.5
done
check sanitize_polls "$n"
check sanitize_sstat "$sstat"
check sanitize_sprog "$(sed -n 's/^Sanitize Progress *(SPROG) *: *//p' /tmp/nvme.out)"
# The raw log's first 4 bytes: SPROG then SSTAT, little-endian (nvme-cli 2.3 prints SSTAT's state bits only).
nvme get-log $CTRL --log-id=0x81 --log-len=512 -b > /tmp/san.bin 2> /dev/null
check sanitize_raw "$(head -c 4 /tmp/san.bin | hexdump -v -e '/1 "%02x"')"
dd if=/dev/nvme0n1 of=/tmp/blk bs=512 count=8 skip=$U iflag=direct 2> /tmp/dd.err
check sanitized_read "$? $(md5 /tmp/blk)"
check zero_expect "$(head -c 4096 /dev/zero | md5sum | cut -d' ' -f1)"

# -- namespaces the host adds, resizes and removes: no rescan, the notice does it ------
check blocks_before_add "$(blocks)"
echo "HOST-STEP add"
n=0
while [ $n -lt 300 ]; do
  ADDED=$(ls /sys/block | grep '^nvme0n' | sed 's/nvme0n//' | grep -v '^1$' | head -n 1)
  [ -n "$ADDED" ] && break
  n=$((n + 1)); sleep 0.2
done
check added_nsid "$ADDED"
check added_blocks "$(blocks)"
if [ -n "$ADDED" ]; then
  check added_size "$(cat /sys/block/nvme0n$ADDED/size)"
  rw_check added_rw /dev/nvme0n$ADDED
  echo "HOST-STEP resize $ADDED"
  old=$(cat /sys/block/nvme0n$ADDED/size); n=0
  while [ $n -lt 300 ] && [ "$(cat /sys/block/nvme0n$ADDED/size)" = "$old" ]; do n=$((n + 1)); sleep 0.2; done
  check resized_size "$(cat /sys/block/nvme0n$ADDED/size)"
  read_back resized_data /dev/nvme0n$ADDED
  echo "HOST-STEP remove $ADDED"
  wait_gone /dev/nvme0n$ADDED 60; check removed_gone "$?"
  check removed_blocks "$(blocks)"
fi
check uptime_end "$(uptime_s)"
